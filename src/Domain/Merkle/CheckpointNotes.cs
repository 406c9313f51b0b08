using System.Globalization;
using System.Text.Json;
using Sandbox.Audited.Domain.Hashing;

namespace Sandbox.Audited.Domain.Merkle;

/// <summary>The C2SP signed note a checkpoint carries (its <c>note</c> field), with the head it must agree with.</summary>
public sealed record CheckpointNote(long? Sequence, long TreeSize, string RootHash, string Note);

/// <summary>
/// Offline checks of checkpoints' Ed25519 signed notes: each note must verify with a published note key
/// (<see cref="SignedNote.Verify"/>) and its body's tree size and root must be the head's.
/// </summary>
public static class CheckpointNotes
{
    /// <summary>The notes of a checkpoint JSON object or array as the API returns it; heads without a note are left out.</summary>
    public static IReadOnlyList<CheckpointNote> ParseAll(string json)
    {
        try
        {
            using var document = JsonDocument.Parse(json);
            var items = document.RootElement.ValueKind == JsonValueKind.Array ? document.RootElement.EnumerateArray().ToList() : [document.RootElement];
            return items.Where(e => e.TryGetProperty("note", out var n) && n.ValueKind == JsonValueKind.String)
                .Select(e => new CheckpointNote(
                    e.TryGetProperty("sequence", out var s) && s.ValueKind == JsonValueKind.Number ? s.GetInt64() : null,
                    e.GetProperty("treeSize").GetInt64(), e.GetProperty("rootHash").GetString()!, e.GetProperty("note").GetString()!))
                .ToList();
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or KeyNotFoundException)
        {
            throw new FormatException($"not a checkpoint as GET /v1/audit/checkpoints returns it ({e.Message})", e);
        }
    }

    /// <summary>
    /// The note keys of GET /v1/audit/checkpoints/key (<c>noteKeys[].verifierKey</c>), or of a text file with one verifier
    /// key ("name+keyid+base64") a line; none for a PEM file.
    /// </summary>
    public static IReadOnlyList<NoteVerifierKey> ParseKeys(string text)
    {
        if (!text.TrimStart().StartsWith('{'))
            return text.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith("-----", StringComparison.Ordinal))
                .Select(NoteVerifierKey.Parse).OfType<NoteVerifierKey>().ToList();
        try
        {
            using var document = JsonDocument.Parse(text);
            if (!document.RootElement.TryGetProperty("noteKeys", out var keys) || keys.ValueKind != JsonValueKind.Array)
                return [];
            return keys.EnumerateArray().Select(k =>
            {
                var vkey = k.ValueKind == JsonValueKind.String ? k.GetString() : k.GetProperty("verifierKey").GetString();
                return NoteVerifierKey.Parse(vkey ?? "") ?? throw new FormatException($"\"{vkey}\" is not an Ed25519 note verifier key");
            }).ToList();
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or KeyNotFoundException)
        {
            throw new FormatException($"not the JSON of GET /v1/audit/checkpoints/key ({e.Message})", e);
        }
    }

    /// <summary>
    /// The note verifies with one of <paramref name="keys"/>, says the head's tree size and root, and names the expected
    /// log: <paramref name="origin"/> when given, else the tenant's origin under the signing key's name (as the service
    /// writes it); neither given leaves the origin unchecked.
    /// </summary>
    public static VerifierCheck Check(CheckpointNote note, IReadOnlyCollection<NoteVerifierKey> keys, string? tenant = null, string? origin = null)
    {
        var name = (note.Sequence is { } s ? $"checkpoint {s}" : "checkpoint") + " note";
        var at = string.Create(CultureInfo.InvariantCulture, $"treeSize {note.TreeSize}");
        if (keys.Count == 0)
            return new VerifierCheck(name, false, $"{at}: no note key given (--key with the JSON of GET /v1/audit/checkpoints/key)");
        var verification = SignedNote.Verify(note.Note, keys);
        if (!verification.Verified)
            return new VerifierCheck(name, false, $"{at}: {verification.Reason}");
        if (CheckpointBody.Parse(verification.Text!) is not { } body)
            return new VerifierCheck(name, false, $"{at}: the signed text is not a tlog checkpoint (origin, size, base64 root)");
        var root = Convert.ToHexStringLower(body.RootHash);
        if (body.TreeSize != note.TreeSize || root != note.RootHash)
            return new VerifierCheck(name, false,
                $"{at}: the signed note says size {body.TreeSize}, root {root}; the head says size {note.TreeSize}, root {note.RootHash}");
        var expected = ExpectedOrigin(verification, tenant, origin);
        if (expected is not null && body.Origin != expected)
            return new VerifierCheck(name, false, $"{at}: the note is of the log \"{body.Origin}\", not of \"{expected}\" (a head of another log or tenant)");
        return new VerifierCheck(name, true,
            $"{at}: Ed25519 signed note of \"{body.Origin}\" verifies with {string.Join(", ", verification.SignedBy)}; size and root match the head"
            + (expected is null ? "; origin not checked (no tenant or --origin)" : "; origin as expected"));
    }

    /// <summary>The origin a verified note must name: the given one, or "{signing key name}/{tenant}".</summary>
    public static string? ExpectedOrigin(NoteVerification verification, string? tenant, string? origin) =>
        origin ?? (tenant is null || verification.SignedBy.Count == 0 ? null : CheckpointBody.OriginOf(verification.SignedBy[0].Split('+')[0], tenant));
}
