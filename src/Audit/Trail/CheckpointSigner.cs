using System.Security.Cryptography;
using Sandbox.Audited.Domain.Hashing;

namespace Sandbox.Audited.Audit.Trail;

/// <summary>
/// Signs tree heads with the service's checkpoint key (ECDSA P-256 + SHA-256, the signature as r‖s in base64), so
/// that a head proves where it came from: an insider with the database but without the key file cannot record a
/// head of their own. The key id is the SHA-256 of the public key (SubjectPublicKeyInfo, DER).
/// Without a configured key (Audit:CheckpointKeyPath) heads are recorded unsigned. After a rotation, the public keys of
/// earlier keys (Audit:PublishedCheckpointKeys, paths of PEM files) stay published, and heads they signed keep verifying.
/// </summary>
public sealed class CheckpointSigner : IDisposable
{
    private readonly ECDsa? _key;
    private readonly Dictionary<string, ECDsa> _earlier = new(StringComparer.Ordinal);

    public CheckpointSigner(string? privateKeyPemPath, IEnumerable<string>? publishedPublicKeyPemPaths = null)
    {
        foreach (var path in publishedPublicKeyPemPaths ?? [])
        {
            var earlier = ECDsa.Create();
            earlier.ImportFromPem(File.ReadAllText(path));
            _earlier[Sha256Hex.Of(earlier.ExportSubjectPublicKeyInfo())] = earlier;
        }
        if (string.IsNullOrEmpty(privateKeyPemPath))
            return;
        _key = ECDsa.Create();
        _key.ImportFromPem(File.ReadAllText(privateKeyPemPath));
        PublicKeyPem = _key.ExportSubjectPublicKeyInfoPem();
        KeyId = Sha256Hex.Of(_key.ExportSubjectPublicKeyInfo());
        _earlier.Remove(KeyId);
    }

    /// <summary>The earlier keys still accepted: key id and public key (PEM).</summary>
    public IReadOnlyList<(string KeyId, string PublicKeyPem)> EarlierKeys =>
        _earlier.Select(k => (k.Key, k.Value.ExportSubjectPublicKeyInfoPem())).ToList();

    public string? PublicKeyPem { get; }

    public string? KeyId { get; }

    /// <summary>What is signed: the UTF-8 of these five lines, each ended by "\n".</summary>
    public static byte[] SignedText(string tenant, TreeHead head) => CheckpointHead.SignedText(tenant, head.ToSequence, head.TreeSize, head.RootHash);

    public string? Sign(string tenant, TreeHead head) =>
        _key is null ? null : Convert.ToBase64String(_key.SignData(SignedText(tenant, head), HashAlgorithmName.SHA256));

    /// <summary>Whether a signature over this head verifies with the key it names, this service's or an earlier published one.</summary>
    public bool Verifies(string tenant, TreeHead head, string? keyId, string? signature)
    {
        var key = keyId is null ? null : keyId == KeyId ? _key : _earlier.GetValueOrDefault(keyId);
        if (key is null || signature is null)
            return false;
        try
        {
            return key.VerifyData(SignedText(tenant, head), Convert.FromBase64String(signature), HashAlgorithmName.SHA256);
        }
        catch (FormatException)
        {
            return false;
        }
    }

    public void Dispose()
    {
        _key?.Dispose();
        foreach (var key in _earlier.Values)
            key.Dispose();
    }
}
