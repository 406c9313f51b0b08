using System.Text;
using NSec.Cryptography;
using Sandbox.Audited.Domain.Merkle;
using Sandbox.Audited.Domain.Startup;

namespace Sandbox.Audited.Audit.Trail;

/// <summary>
/// Writes checkpoints as C2SP tlog-checkpoint signed notes with the service's Ed25519 key (Audit:NoteKeyPath, PKCS#8
/// PEM), so that existing note verifiers accept them. The origin of a tenant's log is "{Audit:LogName}/{tenant}"; the key
/// name is Audit:LogName. Older keys (Audit:PublishedNoteKeys, verifier key strings) stay published and accepted.
/// Without a configured key no note is written.
/// </summary>
public sealed class NoteSigner : IDisposable
{
    public const string DefaultLogName = "sandbox-audited";

    private readonly Key? _key;

    public NoteSigner(string? privateKeyPemPath, string? logName, IEnumerable<string>? publishedKeys)
    {
        LogName = string.IsNullOrWhiteSpace(logName) ? DefaultLogName : logName;
        if (!SignedNote.IsKeyName(LogName))
            throw new InvalidSettingException($"Audit:LogName '{LogName}' must be non-empty and contain no spaces or '+'.");
        var keys = new List<NoteVerifierKey>();
        foreach (var text in publishedKeys ?? [])
            keys.Add(NoteVerifierKey.Parse(text) ?? throw new InvalidSettingException($"Audit:PublishedNoteKeys holds '{text}', which is not an Ed25519 note verifier key (name+keyid+base64)."));
        if (!string.IsNullOrEmpty(privateKeyPemPath))
        {
            _key = Key.Import(SignatureAlgorithm.Ed25519, File.ReadAllBytes(privateKeyPemPath), KeyBlobFormat.PkixPrivateKeyText);
            Current = NoteVerifierKey.For(LogName, _key.PublicKey.Export(KeyBlobFormat.RawPublicKey));
            keys.RemoveAll(k => k.Name == Current.Name && k.KeyId == Current.KeyId);
            keys.Insert(0, Current);
        }
        Keys = keys;
    }

    public string LogName { get; }

    public NoteVerifierKey? Current { get; }

    /// <summary>The current key first, then every older key still accepted.</summary>
    public IReadOnlyList<NoteVerifierKey> Keys { get; }

    /// <summary>The tenant's log origin; characters a note line or key name must not hold are percent-encoded.</summary>
    public string Origin(string tenant) => CheckpointBody.OriginOf(LogName, tenant);

    public string? Sign(string tenant, long treeSize, byte[] rootHash)
    {
        if (_key is null || Current is null)
            return null;
        var text = new CheckpointBody(Origin(tenant), treeSize, rootHash).Text;
        var signature = SignatureAlgorithm.Ed25519.Sign(_key, Encoding.UTF8.GetBytes(text));
        return SignedNote.Assemble(text, [SignedNote.SignatureLine(Current, signature)]);
    }

    /// <summary>Creates an Ed25519 key file (PKCS#8 PEM) readable by its owner only.</summary>
    public static void CreateKey(string path)
    {
        using var key = Key.Create(SignatureAlgorithm.Ed25519, new KeyCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport });
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        File.WriteAllBytes(path, key.Export(KeyBlobFormat.PkixPrivateKeyText));
        if (!OperatingSystem.IsWindows())
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
    }

    public void Dispose() => _key?.Dispose();
}
