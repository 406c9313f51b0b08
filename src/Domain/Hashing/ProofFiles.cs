using System.Text.Json;

namespace Sandbox.Audited.Domain.Hashing;

/// <summary>An inclusion proof: the audit path of leaf LeafIndex (the event with Sequence, or LeafHash) in the tree of TreeSize leaves.</summary>
public sealed record InclusionProof(long? Sequence, long LeafIndex, long TreeSize, IReadOnlyList<byte[]> Path, byte[]? RootHash, byte[]? LeafHash);

/// <summary>A consistency proof between the trees of the first FirstSize and SecondSize leaves.</summary>
public sealed record ConsistencyProof(long FirstSize, long SecondSize, IReadOnlyList<byte[]> Path, byte[]? FirstRoot, byte[]? SecondRoot);

/// <summary>
/// Reads proofs given as JSON files. Hashes are 64 hex digits or base64 of 32 bytes. An inclusion file is one proof
/// ({"sequence","leafIndex","treeSize","auditPath","rootHash"}), an array of them, or an object whose "proofs" array
/// shares its "treeSize" and "rootHash" (the proofs of a run's events); a consistency file is
/// {"first","second","proof","firstRoot","secondRoot"}, or an array of them. Roots may be left out: the verifier then
/// takes them from the checkpoints given or recomputes them from the export.
/// </summary>
public static class ProofFiles
{
    public static IReadOnlyList<InclusionProof> ParseInclusion(string json) => Parse(json, root =>
    {
        if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("proofs", out var proofs))
            return proofs.EnumerateArray().Select(p => Inclusion(p, root)).ToList();
        return root.ValueKind == JsonValueKind.Array ? root.EnumerateArray().Select(p => Inclusion(p, null)).ToList() : [Inclusion(root, null)];
    });

    public static IReadOnlyList<ConsistencyProof> ParseConsistency(string json) => Parse(json, root =>
        root.ValueKind == JsonValueKind.Array ? root.EnumerateArray().Select(Consistency).ToList() : [Consistency(root)]);

    private static IReadOnlyList<T> Parse<T>(string json, Func<JsonElement, IReadOnlyList<T>> read)
    {
        try
        {
            using var document = JsonDocument.Parse(json);
            return read(document.RootElement);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or KeyNotFoundException or FormatException)
        {
            throw new FormatException($"not a proof file ({e.Message})", e);
        }
    }

    private static InclusionProof Inclusion(JsonElement p, JsonElement? shared) => new(
        Long(p, shared, "sequence"),
        Long(p, shared, "leafIndex", "index") ?? throw new FormatException("leafIndex is missing"),
        Long(p, shared, "treeSize", "size") ?? throw new FormatException("treeSize is missing"),
        Hashes(p, "auditPath", "inclusionPath", "path", "hashes"),
        Hash(p, shared, "rootHash", "root"),
        Hash(p, null, "leafHash"));

    private static ConsistencyProof Consistency(JsonElement p) => new(
        Long(p, null, "first", "firstSize", "fromSize") ?? throw new FormatException("first is missing"),
        Long(p, null, "second", "secondSize", "toSize") ?? throw new FormatException("second is missing"),
        Hashes(p, "proof", "consistencyPath", "path", "hashes"),
        Hash(p, null, "firstRoot", "firstRootHash"),
        Hash(p, null, "secondRoot", "secondRootHash"));

    private static JsonElement? Find(JsonElement p, JsonElement? shared, string[] names)
    {
        foreach (var source in shared is { } s ? [p, s] : new[] { p })
            foreach (var name in names)
                if (source.TryGetProperty(name, out var value) && value.ValueKind != JsonValueKind.Null)
                    return value;
        return null;
    }

    private static long? Long(JsonElement p, JsonElement? shared, params string[] names) => Find(p, shared, names)?.GetInt64();

    private static byte[]? Hash(JsonElement p, JsonElement? shared, params string[] names) =>
        Find(p, shared, names) is { } value ? Decode(value.GetString()!) : null;

    private static List<byte[]> Hashes(JsonElement p, params string[] names) =>
        Find(p, null, names) is { } value ? value.EnumerateArray().Select(h => Decode(h.GetString()!)).ToList() : throw new FormatException($"{names[0]} is missing");

    public static byte[] Decode(string hash)
    {
        var bytes = hash.Length == 64 && hash.All(char.IsAsciiHexDigit) ? Convert.FromHexString(hash) : Convert.FromBase64String(hash);
        return bytes.Length == 32 ? bytes : throw new FormatException($"\"{hash}\" is not a SHA-256 hash (64 hex digits or base64 of 32 bytes)");
    }
}
