using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Sandbox.Audited.Domain.Hashing;

/// <summary>
/// A recorded checkpoint as GET /v1/audit/checkpoints shows it: the tree head over a tenant's events up to a global
/// sequence, and its ECDSA P-256 signature (r‖s, base64) over <see cref="SignedText"/> by the key named by KeyId
/// (the SHA-256 of the public key's SubjectPublicKeyInfo, DER, in hex).
/// </summary>
public sealed record CheckpointHead(string Tenant, long ToSequence, long TreeSize, string RootHash, string? KeyId, string? Signature, long? Sequence)
{
    /// <summary>What a head's signature covers: the UTF-8 of these five lines, each ended by "\n".</summary>
    public static byte[] SignedText(string tenant, long toSequence, long treeSize, string rootHash) => Encoding.UTF8.GetBytes(
        string.Create(CultureInfo.InvariantCulture, $"sandbox-audited checkpoint v1\n{tenant}\n{toSequence}\n{treeSize}\n{rootHash}\n"));

    /// <summary>Reads a checkpoint JSON object (or each one of an array of them) as the API returns it.</summary>
    public static IReadOnlyList<CheckpointHead> ParseAll(string json)
    {
        try
        {
            using var document = JsonDocument.Parse(json);
            return document.RootElement.ValueKind == JsonValueKind.Array
                ? document.RootElement.EnumerateArray().Select(FromElement).ToList()
                : [FromElement(document.RootElement)];
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or KeyNotFoundException or FormatException)
        {
            throw new FormatException($"not a checkpoint as GET /v1/audit/checkpoints returns it ({e.Message})", e);
        }
    }

    private static CheckpointHead FromElement(JsonElement e)
    {
        var root = e.GetProperty("rootHash").GetString()!;
        if (root.Length != 64 || !root.All(char.IsAsciiHexDigitLower))
            throw new FormatException("rootHash is not 64 lowercase hex digits");
        return new CheckpointHead(
            e.GetProperty("tenant").GetString()!, e.GetProperty("toSequence").GetInt64(), e.GetProperty("treeSize").GetInt64(), root,
            e.TryGetProperty("keyId", out var keyId) && keyId.ValueKind == JsonValueKind.String ? keyId.GetString() : null,
            e.TryGetProperty("signature", out var signature) && signature.ValueKind == JsonValueKind.String ? signature.GetString() : null,
            e.TryGetProperty("sequence", out var sequence) && sequence.ValueKind == JsonValueKind.Number ? sequence.GetInt64() : null);
    }

    /// <summary>Null when the signature verifies with the key the head names; otherwise why not.</summary>
    public string? SignatureProblem(CheckpointKeySet keys)
    {
        if (Signature is null || KeyId is null)
            return "the head is unsigned: nothing proves the service recorded it";
        if (!keys.TryGet(KeyId, out var key))
            return $"the head is signed with key {KeyId}, which is not among the public keys given";
        byte[] signature;
        try
        {
            signature = Convert.FromBase64String(Signature);
        }
        catch (FormatException)
        {
            return "the signature is not base64";
        }
        return key.VerifyData(SignedText(Tenant, ToSequence, TreeSize, RootHash), signature, HashAlgorithmName.SHA256)
            ? null
            : $"the signature does not verify with key {KeyId}: the head was changed or not signed by that key";
    }
}

/// <summary>
/// The public keys an auditor trusts for checkpoints, by key id: PEM files (several keys each, after a rotation) or the
/// JSON of GET /v1/audit/checkpoints/key.
/// </summary>
public sealed class CheckpointKeySet : IDisposable
{
    private readonly Dictionary<string, ECDsa> _keys = new(StringComparer.Ordinal);

    public IReadOnlyCollection<string> KeyIds => _keys.Keys;

    public bool TryGet(string keyId, out ECDsa key) => _keys.TryGetValue(keyId.ToLowerInvariant(), out key!);

    /// <summary>Adds every public key of a PEM text or of the key endpoint's JSON; returns their key ids.</summary>
    public IReadOnlyList<string> Add(string text)
    {
        if (text.TrimStart().StartsWith('{'))
        {
            try
            {
                using var document = JsonDocument.Parse(text);
                text = document.RootElement.GetProperty("publicKeyPem").GetString() ?? "";
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
            {
                throw new FormatException($"not the JSON of GET /v1/audit/checkpoints/key ({e.Message})", e);
            }
        }
        var added = new List<string>();
        var rest = text.AsSpan();
        while (PemEncoding.TryFind(rest, out var fields))
        {
            var label = rest[fields.Label];
            if (label.SequenceEqual("PUBLIC KEY"))
            {
                var key = ECDsa.Create();
                try
                {
                    key.ImportSubjectPublicKeyInfo(Convert.FromBase64String(rest[fields.Base64Data].ToString()), out _);
                }
                catch (CryptographicException e)
                {
                    key.Dispose();
                    throw new FormatException($"a PUBLIC KEY block is not an ECDSA public key ({e.Message})", e);
                }
                var id = Sha256Hex.Of(key.ExportSubjectPublicKeyInfo());
                if (!_keys.TryAdd(id, key))
                    key.Dispose();
                added.Add(id);
            }
            rest = rest[fields.Location.End..];
        }
        if (added.Count == 0)
            throw new FormatException("no \"-----BEGIN PUBLIC KEY-----\" block found");
        return added;
    }

    public void Dispose()
    {
        foreach (var key in _keys.Values)
            key.Dispose();
    }
}
