using System.Security.Cryptography;
using System.Text;
using Sandbox.Audited.Domain.Hashing;

namespace Sandbox.Audited.Audit.Trail;

/// <summary>
/// Signs tree heads with the service's checkpoint key (ECDSA P-256 + SHA-256, the signature as r‖s in base64), so
/// that a head proves where it came from: an insider with the database but without the key file cannot record a
/// head of their own. The key id is the SHA-256 of the public key (SubjectPublicKeyInfo, DER).
/// Without a configured key (Audit:CheckpointKeyPath) heads are recorded unsigned.
/// </summary>
public sealed class CheckpointSigner : IDisposable
{
    private readonly ECDsa? _key;

    public CheckpointSigner(string? privateKeyPemPath)
    {
        if (string.IsNullOrEmpty(privateKeyPemPath))
            return;
        _key = ECDsa.Create();
        _key.ImportFromPem(File.ReadAllText(privateKeyPemPath));
        PublicKeyPem = _key.ExportSubjectPublicKeyInfoPem();
        KeyId = Sha256Hex.Of(_key.ExportSubjectPublicKeyInfo());
    }

    public string? PublicKeyPem { get; }

    public string? KeyId { get; }

    /// <summary>What is signed: the UTF-8 of these five lines, each ended by "\n".</summary>
    public static byte[] SignedText(string tenant, TreeHead head) => Encoding.UTF8.GetBytes(FormattableString.Invariant(
        $"sandbox-audited checkpoint v1\n{tenant}\n{head.ToSequence}\n{head.TreeSize}\n{head.RootHash}\n"));

    public string? Sign(string tenant, TreeHead head) =>
        _key is null ? null : Convert.ToBase64String(_key.SignData(SignedText(tenant, head), HashAlgorithmName.SHA256));

    /// <summary>Whether a signature over this head verifies with this service's key (false for unsigned heads or another key).</summary>
    public bool Verifies(string tenant, TreeHead head, string? keyId, string? signature)
    {
        if (_key is null || keyId != KeyId || signature is null)
            return false;
        try
        {
            return _key.VerifyData(SignedText(tenant, head), Convert.FromBase64String(signature), HashAlgorithmName.SHA256);
        }
        catch (FormatException)
        {
            return false;
        }
    }

    public void Dispose() => _key?.Dispose();
}
