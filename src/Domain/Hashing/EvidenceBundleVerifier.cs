using System.Text.Json;

namespace Sandbox.Audited.Domain.Hashing;

/// <summary>
/// Checks an evidence bundle (GET /v1/runs/{id}/evidence, layout in docs/evidence.md) given its files by path: every file
/// is listed in manifest.json with the SHA-256 it has; the run's events and the tenant's erasure events verify as exports
/// do; and every content digest the run's events name is in content/ with exactly that digest, or was erased by a
/// recorded erasure event.
/// </summary>
public static class EvidenceBundleVerifier
{
    public const string Manifest = "manifest.json";

    public static IReadOnlyList<VerifierCheck> Verify(IReadOnlyDictionary<string, byte[]> files)
    {
        var checks = new List<VerifierCheck>();
        if (!files.TryGetValue(Manifest, out var manifestBytes))
            return [new VerifierCheck("manifest", false, "manifest.json is missing: this is not an evidence bundle")];

        var listed = new Dictionary<string, string>(StringComparer.Ordinal);
        using (var manifest = JsonDocument.Parse(manifestBytes))
            foreach (var file in manifest.RootElement.GetProperty("files").EnumerateArray())
                listed[file.GetProperty("path").GetString()!] = file.GetProperty("sha256").GetString()!;
        var wrong = listed.Where(f => !files.TryGetValue(f.Key, out var bytes) || Sha256Hex.Of(bytes) != f.Value).Select(f => f.Key).ToList();
        var unlisted = files.Keys.Where(k => k != Manifest && !listed.ContainsKey(k)).ToList();
        checks.Add(wrong.Count == 0 && unlisted.Count == 0
            ? new VerifierCheck("manifest", true, $"{listed.Count} files, each with the SHA-256 the manifest lists")
            : new VerifierCheck("manifest", false, string.Join("; ",
                wrong.Select(w => $"{w} is missing or does not hash to its listed SHA-256").Concat(unlisted.Select(u => $"{u} is not listed")))));

        var runEvents = Events(files, "events.ndjson");
        var erasures = Events(files, "erasures.ndjson");
        checks.AddRange(Chain("events", runEvents));
        if (erasures.Count > 0)
            checks.AddRange(Chain("erasures", erasures));

        var erased = new HashSet<string>(StringComparer.Ordinal);
        foreach (var e in erasures.Where(e => e.Type == "evidence_erased"))
        {
            using var data = JsonDocument.Parse(e.Data);
            foreach (var sha in data.RootElement.GetProperty("sha256s").EnumerateArray())
                erased.Add(sha.GetString()!);
        }
        var problems = new List<string>();
        var (present, wasErased) = (0, 0);
        foreach (var (role, sha) in References(runEvents))
        {
            if (files.TryGetValue("content/" + sha, out var content))
            {
                if (Sha256Hex.Of(content) == sha) present++;
                else problems.Add($"{role}: content/{sha} does not hash to the digest the events record");
            }
            else if (erased.Contains(sha)) wasErased++;
            else problems.Add($"{role}: content {sha} is neither in the bundle nor erased by a recorded erasure");
        }
        checks.Add(problems.Count == 0
            ? new VerifierCheck("content", true, $"{present} contents match the digests in the events; {wasErased} erased by recorded erasure events")
            : new VerifierCheck("content", false, string.Join("; ", problems)));
        return checks;
    }

    private static List<ExportedEvent> Events(IReadOnlyDictionary<string, byte[]> files, string name)
    {
        var events = new List<ExportedEvent>();
        if (!files.TryGetValue(name, out var bytes))
            return events;
        long line = 0;
        foreach (var text in Split(bytes))
        {
            line++;
            if (!text.IsEmpty)
                events.Add(ExportedEvent.Parse(text.Span, line));
        }
        return events;
    }

    private static IEnumerable<ReadOnlyMemory<byte>> Split(ReadOnlyMemory<byte> bytes)
    {
        while (!bytes.IsEmpty)
        {
            var end = bytes.Span.IndexOf((byte)'\n');
            if (end < 0) end = bytes.Length;
            yield return bytes[..end];
            bytes = end < bytes.Length ? bytes[(end + 1)..] : ReadOnlyMemory<byte>.Empty;
        }
    }

    private static IEnumerable<VerifierCheck> Chain(string name, List<ExportedEvent> events)
    {
        var verifier = new OfflineVerifier([], null, [], []);
        foreach (var e in events)
            verifier.Add(e);
        return verifier.Complete().Select(c => c with { Name = name + ": " + c.Name });
    }

    /// <summary>The digests a run's events say are in the evidence store (the same rule as the service's evidence verification).</summary>
    public static IEnumerable<(string Role, string Sha256)> References(IEnumerable<ExportedEvent> events)
    {
        foreach (var e in events)
        {
            using var data = JsonDocument.Parse(e.Data);
            var root = data.RootElement;
            switch (e.Type)
            {
                case "run_requested" when root.TryGetProperty("inputsStored", out var stored) && stored.ValueKind == JsonValueKind.True:
                    yield return ("code", root.GetProperty("codeSha256").GetString()!);
                    yield return ("stdin", root.GetProperty("stdinSha256").GetString()!);
                    foreach (var file in root.GetProperty("files").EnumerateArray())
                        yield return ("file:" + file.GetProperty("name").GetString(), file.GetProperty("sha256").GetString()!);
                    break;
                case "output_recorded":
                    foreach (var stream in new[] { "stdout", "stderr" })
                        if (root.GetProperty(stream) is var output && output.TryGetProperty("stored", out var s) && s.ValueKind == JsonValueKind.True)
                            yield return (stream, output.GetProperty("sha256").GetString()!);
                    break;
                case "artifact_recorded" when root.TryGetProperty("sha256", out var sha) && sha.ValueKind == JsonValueKind.String:
                    yield return ("artifact:" + (root.TryGetProperty("name", out var n) ? n.GetString() : "?"), sha.GetString()!);
                    break;
            }
        }
    }
}
