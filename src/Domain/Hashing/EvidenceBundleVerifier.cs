using System.Globalization;
using System.Text;
using System.Text.Json;
using Sandbox.Audited.Domain.Merkle;

namespace Sandbox.Audited.Domain.Hashing;

/// <summary>What a bundle check found, and whether the checkpoint's signature was checked only with the key the bundle carries.</summary>
public sealed record EvidenceBundleReport(IReadOnlyList<VerifierCheck> Checks, bool CheckedWithBundleKey);

/// <summary>
/// Checks an evidence bundle (GET /v1/runs/{id}/evidence, layout in docs/evidence.md) given its files by path: every file
/// is listed in manifest.json with the SHA-256 it has; the run's events and the tenant's erasure events verify as exports
/// do; every content digest the run's events name is in content/ with exactly that digest, or was erased by a recorded
/// erasure event; the runtime's SBOM hashes to the digest sandbox_created records; the policy files hash to the bundle
/// digest policy_evaluated records; every event is in the tenant's Merkle tree by its inclusion proof (RFC 9162
/// §2.1.3.2) up to the root of the signed checkpoint; and that checkpoint's Ed25519 note verifies with a trusted key and
/// names the tenant's log. Nothing here trusts the manifest: it only says which files there are.
/// </summary>
public static class EvidenceBundleVerifier
{
    public const string Manifest = "manifest.json";
    public const string InclusionFile = "proofs/inclusion.json";
    public const string CheckpointFile = "proofs/checkpoint.json";
    public const string KeysFile = "keys/checkpoint-key.json";

    /// <summary>
    /// <paramref name="trustedKeys"/>: the note keys the auditor holds; null to use the ones in the bundle, which only
    /// say which key signed (anyone who forges a bundle can put their own key in it), as the report then says.
    /// <paramref name="origin"/>: the log the checkpoint must be of; null for "{key name}/{the events' tenant}".
    /// </summary>
    public static EvidenceBundleReport Verify(IReadOnlyDictionary<string, byte[]> files, IReadOnlyCollection<NoteVerifierKey>? trustedKeys = null, string? origin = null)
    {
        var checks = new List<VerifierCheck>();
        if (!files.TryGetValue(Manifest, out var manifestBytes))
            return new([new VerifierCheck("manifest", false, "manifest.json is missing: this is not an evidence bundle")], false);

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

        checks.Add(Contents(files, runEvents, erasures));
        checks.Add(Sbom(files, runEvents));
        checks.Add(Policy(files, runEvents));

        var tenant = runEvents.Select(e => e.Tenant).FirstOrDefault(t => t is not null);
        var (checkpointChecks, signedBody, withBundleKey) = Checkpoint(files, trustedKeys, tenant, origin);
        checks.Add(Inclusion(files, runEvents.Concat(erasures).ToList(), signedBody));
        checks.AddRange(checkpointChecks);
        return new(checks, withBundleKey);
    }

    private static VerifierCheck Contents(IReadOnlyDictionary<string, byte[]> files, List<ExportedEvent> runEvents, List<ExportedEvent> erasures)
    {
        var erased = new HashSet<string>(StringComparer.Ordinal);
        foreach (var e in erasures.Where(e => e.Type == "evidence_erased"))
        {
            using var data = JsonDocument.Parse(e.Data);
            foreach (var sha in data.RootElement.GetProperty("sha256s").EnumerateArray())
                erased.Add(sha.GetString()!);
        }
        var problems = new List<string>();
        var erasedRoles = new List<string>();
        var present = 0;
        foreach (var (role, sha) in References(runEvents))
        {
            if (files.TryGetValue("content/" + sha, out var content))
            {
                if (Sha256Hex.Of(content) == sha) present++;
                else problems.Add($"{role}: content/{sha} does not hash to the digest the events record");
            }
            else if (erased.Contains(sha)) erasedRoles.Add(role);
            else problems.Add($"{role}: content {sha} is neither in the bundle nor erased by a recorded erasure");
        }
        return problems.Count == 0
            ? new VerifierCheck("content", true, $"{present} contents match the digests in the events; {erasedRoles.Count} erased by recorded erasure events"
                + (erasedRoles.Count > 0 ? $" ({string.Join(", ", erasedRoles)})" : ""))
            : new VerifierCheck("content", false, string.Join("; ", problems));
    }

    /// <summary>Each sandbox_created event's SBOM digest ("sha256:" + hex of the exact bytes) must be sbom/{hex}.spdx.json's.</summary>
    private static VerifierCheck Sbom(IReadOnlyDictionary<string, byte[]> files, List<ExportedEvent> runEvents)
    {
        var digests = new List<(string Runtime, string Digest)>();
        foreach (var e in runEvents.Where(e => e.Type == "sandbox_created"))
        {
            using var data = JsonDocument.Parse(e.Data);
            var root = data.RootElement;
            if (root.TryGetProperty("sbomDigest", out var d) && d.ValueKind == JsonValueKind.String)
                digests.Add((root.TryGetProperty("runtimeId", out var r) && r.ValueKind == JsonValueKind.String ? r.GetString()! : "?", d.GetString()!));
        }
        if (digests.Count == 0)
            return new VerifierCheck("sbom", true, runEvents.Any(e => e.Type == "sandbox_created")
                ? "the run's sandbox_created records no SBOM digest (recorded before SBOMs were): nothing to check"
                : "no sandbox was created for this run: no runtime SBOM to check");
        var problems = new List<string>();
        foreach (var (runtime, digest) in digests.Distinct())
        {
            var hex = digest.StartsWith("sha256:", StringComparison.Ordinal) ? digest["sha256:".Length..] : digest;
            var path = $"sbom/{hex}.spdx.json";
            if (!files.TryGetValue(path, out var sbom))
                problems.Add($"runtime {runtime}: {path} is missing (sandbox_created records SBOM {digest})");
            else if (Sha256Hex.Of(sbom) != hex)
                problems.Add($"runtime {runtime}: {path} hashes to sha256:{Sha256Hex.Of(sbom)}, not to the SBOM digest sandbox_created records ({digest})");
        }
        return problems.Count == 0
            ? new VerifierCheck("sbom", true, string.Join("; ", digests.Distinct().Select(d => $"runtime {d.Runtime}: the SBOM hashes to {d.Digest}, as sandbox_created records")))
            : new VerifierCheck("sbom", false, string.Join("; ", problems));
    }

    /// <summary>The files under policy/{digest}/ must give the bundle digest policy_evaluated records (path and SHA-256 of each file).</summary>
    private static VerifierCheck Policy(IReadOnlyDictionary<string, byte[]> files, List<ExportedEvent> runEvents)
    {
        var digests = new HashSet<string>(StringComparer.Ordinal);
        foreach (var e in runEvents.Where(e => e.Type == "policy_evaluated"))
        {
            using var data = JsonDocument.Parse(e.Data);
            if (data.RootElement.TryGetProperty("bundleDigest", out var d) && d.ValueKind == JsonValueKind.String)
                digests.Add(d.GetString()!);
        }
        if (digests.Count == 0)
            return new VerifierCheck("policy", true, "no policy decision in the run's events: no policy files to check");
        var problems = new List<string>();
        foreach (var digest in digests)
        {
            var prefix = $"policy/{digest}/";
            var bundle = files.Where(f => f.Key.StartsWith(prefix, StringComparison.Ordinal))
                .Select(f => (Path: f.Key[prefix.Length..], Sha256: Sha256Hex.Of(f.Value))).ToList();
            if (bundle.Count == 0)
                problems.Add($"the policy bundle {digest} the run was decided under is not in the bundle");
            else if (Policies.PolicyBundle.ComputeDigest(bundle) is var actual && actual != digest)
                problems.Add($"the files under {prefix} give the bundle digest {actual}, not {digest} as policy_evaluated records (a policy file changed, added or removed)");
        }
        return problems.Count == 0
            ? new VerifierCheck("policy", true, $"the policy files give the bundle digest policy_evaluated records ({string.Join(", ", digests)})")
            : new VerifierCheck("policy", false, string.Join("; ", problems));
    }

    /// <summary>
    /// Checks proofs/checkpoint.json's signed note: its signature (with the trusted keys, or else the bundle's own), that it
    /// names the expected log, and that it states the head the file states. Returns the body when the signature verified.
    /// </summary>
    private static (List<VerifierCheck> Checks, CheckpointBody? Body, bool WithBundleKey) Checkpoint(
        IReadOnlyDictionary<string, byte[]> files, IReadOnlyCollection<NoteVerifierKey>? trustedKeys, string? tenant, string? origin)
    {
        var checks = new List<VerifierCheck>();
        if (!files.TryGetValue(CheckpointFile, out var bytes))
            return ([new VerifierCheck("checkpoint signature", false, $"{CheckpointFile} is missing: nothing signed covers the run")], null, false);
        var note = CheckpointNotes.ParseAll(Encoding.UTF8.GetString(bytes)).FirstOrDefault();
        if (note is null)
            return ([new VerifierCheck("checkpoint signature", false, "the checkpoint carries no signed note: this deployment has no note key (Audit:NoteKeyPath)")], null, false);
        var withBundleKey = trustedKeys is null;
        var keys = trustedKeys ?? (files.TryGetValue(KeysFile, out var keyBytes) ? CheckpointNotes.ParseKeys(Encoding.UTF8.GetString(keyBytes)) : []);
        var whose = withBundleKey ? "the key the bundle carries (it only names the signer: pass --key with a key you hold to prove who signed)" : "the key you gave";
        var name = note.Sequence is { } s ? $"checkpoint {s.ToString(CultureInfo.InvariantCulture)}" : "checkpoint";
        var verification = SignedNote.Verify(note.Note, keys);
        if (!verification.Verified)
        {
            checks.Add(new VerifierCheck("checkpoint signature", false, $"{name}: {verification.Reason} (checked with {whose})"));
            return (checks, null, withBundleKey);
        }
        if (CheckpointBody.Parse(verification.Text!) is not { } body)
        {
            checks.Add(new VerifierCheck("checkpoint signature", false, $"{name}: the signed text is not a tlog checkpoint (origin, size, base64 root)"));
            return (checks, null, withBundleKey);
        }
        checks.Add(new VerifierCheck("checkpoint signature", true,
            $"{name}: the Ed25519 signed note (tree size {body.TreeSize.ToString(CultureInfo.InvariantCulture)}) verifies with {string.Join(", ", verification.SignedBy)}, {whose}"));
        var expected = CheckpointNotes.ExpectedOrigin(verification, tenant, origin);
        checks.Add(expected is null
            ? new VerifierCheck("checkpoint origin", false, "no tenant in the events and no --origin: the note's log cannot be checked")
            : body.Origin == expected
                ? new VerifierCheck("checkpoint origin", true, $"the note is of the log \"{body.Origin}\", as expected{(origin is null ? " for the events' tenant" : "")}")
                : new VerifierCheck("checkpoint origin", false, $"the note is of the log \"{body.Origin}\", not of \"{expected}\": a checkpoint of another log or tenant"));
        var root = Convert.ToHexStringLower(body.RootHash);
        if (body.TreeSize != note.TreeSize || root != note.RootHash)
            checks.Add(new VerifierCheck("checkpoint head", false,
                $"the signed note says size {body.TreeSize}, root {root}; {CheckpointFile} says size {note.TreeSize}, root {note.RootHash}"));
        return (checks, body, withBundleKey);
    }

    /// <summary>Every event of the bundle must have an inclusion proof whose audit path leads from its leaf to the signed root.</summary>
    private static VerifierCheck Inclusion(IReadOnlyDictionary<string, byte[]> files, List<ExportedEvent> events, CheckpointBody? signed)
    {
        if (!files.TryGetValue(InclusionFile, out var bytes))
            return new VerifierCheck("inclusion", false, $"{InclusionFile} is missing: nothing shows the events are in the tenant's tree");
        var proofs = ProofFiles.ParseInclusion(Encoding.UTF8.GetString(bytes));
        var bySequence = proofs.Where(p => p.Sequence is not null).GroupBy(p => p.Sequence!.Value).ToDictionary(g => g.Key, g => g.First());
        if (signed is null)
            return new VerifierCheck("inclusion", false, "no verified checkpoint root to check the proofs against (see the checkpoint signature check)");
        var problems = new List<string>();
        foreach (var e in events)
        {
            if (!bySequence.TryGetValue(e.Sequence, out var proof))
            {
                problems.Add($"{e}: no inclusion proof");
                continue;
            }
            if (proof.TreeSize != signed.TreeSize)
                problems.Add($"{e}: the proof is for a tree of {proof.TreeSize} leaves, the signed checkpoint's has {signed.TreeSize}");
            else if (!MerkleProofs.VerifyInclusion(proof.LeafIndex, proof.TreeSize, MerkleTree.LeafHash(e.Leaf), proof.Path, signed.RootHash))
                problems.Add($"{e}: the audit path does not lead from its leaf {proof.LeafIndex} to the signed root {Convert.ToHexStringLower(signed.RootHash)}");
            if (problems.Count >= 5)
                break;
        }
        return problems.Count == 0
            ? new VerifierCheck("inclusion", true, string.Create(CultureInfo.InvariantCulture,
                $"all {events.Count} events are in the tenant's tree of {signed.TreeSize} leaves with the signed root {Convert.ToHexStringLower(signed.RootHash)} (RFC 9162 audit paths)"))
            : new VerifierCheck("inclusion", false, string.Join("; ", problems));
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
