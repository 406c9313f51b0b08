using System.Globalization;

namespace Sandbox.Audited.Domain.Hashing;

/// <summary>One check of an offline verification and its outcome, in words an auditor can act on.</summary>
public sealed record VerifierCheck(string Name, bool Passed, string Detail);

/// <summary>
/// Checks a tenant's NDJSON export without the service: every event's hash in the canonical form it names, every chain
/// link, line order, and — given checkpoints, public keys and proofs — each head's signature, the Merkle root recomputed
/// over the export's events in sequence order, and inclusion and consistency proofs (RFC 9162). Feed the lines in file
/// order with <see cref="Add"/>, then call <see cref="Complete"/>. Holds the export in memory.
/// </summary>
public sealed class OfflineVerifier(
    IReadOnlyList<CheckpointHead> checkpoints, CheckpointKeySet? keys,
    IReadOnlyList<InclusionProof> inclusionProofs, IReadOnlyList<ConsistencyProof> consistencyProofs)
{
    private readonly List<ExportedEvent> _events = [];
    private readonly HashSet<string?> _tenants = [];
    private ExportedEvent? _firstDisorder;
    private ExportedEvent? _previous;

    public void Add(ExportedEvent e)
    {
        if (_previous is { } previous && e.Sequence <= previous.Sequence && _firstDisorder is null)
            _firstDisorder = e;
        _previous = e;
        _tenants.Add(e.Tenant);
        _events.Add(e);
    }

    public IReadOnlyList<VerifierCheck> Complete()
    {
        var checks = new List<VerifierCheck>
        {
            _firstDisorder is { } d
                ? new VerifierCheck("order", false, $"{d}: sequence {d.Sequence} does not follow {_events[_events.IndexOf(d) - 1].Sequence} (lines reordered, duplicated or inserted)")
                : new VerifierCheck("order", true, $"{_events.Count} events in strictly increasing sequence"),
        };
        var tenant = _tenants.Count == 1 ? _tenants.First() : null;
        checks.Add(_tenants.Count <= 1
            ? new VerifierCheck("tenant", true, _events.Count == 0 ? "the export is empty" : $"every event belongs to tenant \"{tenant}\"")
            : new VerifierCheck("tenant", false, $"the export mixes tenants: {string.Join(", ", _tenants.Select(t => t ?? "(none)"))}"));
        checks.Add(Chains());

        var leaves = _events.Select(e => e.Leaf).ToList();
        var rootsBySize = RootsAt(leaves, SizesNeeded(leaves.Count));
        foreach (var head in checkpoints)
            checks.AddRange(Checkpoint(head, tenant, rootsBySize));
        foreach (var proof in inclusionProofs)
            checks.Add(Inclusion(proof, rootsBySize));
        foreach (var proof in consistencyProofs)
            checks.Add(Consistency(proof, rootsBySize));
        return checks;
    }

    private VerifierCheck Chains()
    {
        var verifier = new ChainVerifier(maxBreaks: 1);
        var lines = new Dictionary<(Guid, long), ExportedEvent>();
        // Sorted by stream then version (stable: a duplicated line stays after its original, so it shows as repeated).
        foreach (var e in _events.OrderBy(e => e.StreamId).ThenBy(e => e.Version))
        {
            lines.TryAdd((e.StreamId, e.Version), e);
            verifier.Add(new StoredEvent(e.StreamId, e.Version, e.Sequence, e.Type, "", e.Hash, e.PrevHash, null) { DataUtf8 = e.Data, Canon = e.Canon });
        }
        verifier.Complete();
        var legacy = _events.Count(e => e.Canon is null);
        var forms = $"{_events.Count - legacy} in RFC 8785 (canon \"jcs\"), {legacy} in the legacy form";
        if (verifier.Verified)
            return new VerifierCheck("hash chains", true,
                $"{verifier.EventsChecked} event hashes recomputed ({forms}); {verifier.StreamsChecked} streams, versions contiguous from 1, every prevHash links");
        var first = verifier.Breaks[0];
        var where = lines.TryGetValue((first.StreamId, first.Version), out var line) ? line.ToString()
            : string.Create(CultureInfo.InvariantCulture, $"stream {first.StreamId:D} version {first.Version}");
        return new VerifierCheck("hash chains", false,
            $"{verifier.BrokenStreams} of {verifier.StreamsChecked} streams broken; first: {where}: {first.Reason}");
    }

    private HashSet<long> SizesNeeded(int count)
    {
        var sizes = new HashSet<long> { count };
        foreach (var p in inclusionProofs) sizes.Add(p.TreeSize);
        foreach (var p in consistencyProofs) { sizes.Add(p.FirstSize); sizes.Add(p.SecondSize); }
        foreach (var head in checkpoints) sizes.Add(_events.Count(e => e.Sequence <= head.ToSequence));
        return sizes;
    }

    /// <summary>The root of the export's first n leaves, for each n needed (only those the export holds).</summary>
    private static Dictionary<long, string> RootsAt(List<byte[]> leaves, HashSet<long> sizes)
    {
        var roots = new Dictionary<long, string>();
        var tree = new MerkleTree();
        if (sizes.Contains(0)) roots[0] = tree.Root;
        foreach (var leaf in leaves)
        {
            tree.Add(leaf);
            if (sizes.Contains(tree.Size)) roots[tree.Size] = tree.Root;
        }
        return roots;
    }

    private IEnumerable<VerifierCheck> Checkpoint(CheckpointHead head, string? tenant, Dictionary<long, string> rootsBySize)
    {
        var name = head.Sequence is { } s ? $"checkpoint {s}" : "checkpoint";
        var at = $"toSequence {head.ToSequence}, treeSize {head.TreeSize}";
        if (keys is not null)
            yield return head.SignatureProblem(keys) is { } problem
                ? new VerifierCheck(name + " signature", false, $"{at}: {problem}")
                : new VerifierCheck(name + " signature", true, $"{at}: ECDSA P-256 signature verifies with key {head.KeyId}");
        if (tenant is not null && head.Tenant != tenant)
        {
            yield return new VerifierCheck(name + " tree", false, $"the checkpoint is for tenant \"{head.Tenant}\", the export for \"{tenant}\"");
            yield break;
        }
        var covered = _events.Count(e => e.Sequence <= head.ToSequence);
        var root = rootsBySize[covered];
        if (covered != head.TreeSize)
            yield return new VerifierCheck(name + " tree", false,
                $"{at}: the export has {covered} events up to sequence {head.ToSequence}, the checkpoint {head.TreeSize} "
                + $"({(covered < head.TreeSize ? "events deleted, or the export was filtered" : "events inserted")}; {FirstDifference(head)})");
        else if (root != head.RootHash)
            yield return new VerifierCheck(name + " tree", false,
                $"{at}: the Merkle root of the export's events is {root}, the checkpoint's {head.RootHash} (an event altered, replaced or reordered)");
        else
            yield return new VerifierCheck(name + " tree", true, $"{at}: the Merkle root recomputed over the export's {covered} events matches {root}");
    }

    private string FirstDifference(CheckpointHead head) =>
        _events.Count == 0 || _events[0].Sequence > head.ToSequence ? "the export has no event up to that sequence"
            : $"the export covers sequences {_events[0].Sequence}..{_events.Last(e => e.Sequence <= head.ToSequence).Sequence}";

    private string? TrustedRoot(long size, byte[]? given, Dictionary<long, string> rootsBySize, out string? conflict)
    {
        conflict = null;
        var signed = checkpoints.FirstOrDefault(c => c.TreeSize == size)?.RootHash;
        var fromExport = rootsBySize.TryGetValue(size, out var r) ? r : null;
        var root = given is not null ? Convert.ToHexStringLower(given) : signed ?? fromExport;
        if (root is not null && signed is not null && root != signed)
            conflict = $"the proof's root for size {size} is not the root of the checkpoint of that size";
        else if (root is not null && fromExport is not null && root != fromExport)
            conflict = $"the proof's root for size {size} is not the root of the export's first {size} events";
        return root;
    }

    private VerifierCheck Inclusion(InclusionProof proof, Dictionary<long, string> rootsBySize)
    {
        var name = proof.Sequence is { } sequence ? $"inclusion of sequence {sequence}" : $"inclusion of leaf {proof.LeafIndex}";
        byte[] leafHash;
        if (proof.Sequence is { } seq)
        {
            var index = _events.FindIndex(e => e.Sequence == seq);
            if (index < 0)
                return new VerifierCheck(name, false, $"sequence {seq} is not in the export");
            if (index != proof.LeafIndex)
                return new VerifierCheck(name, false, $"the proof puts sequence {seq} at leaf {proof.LeafIndex}, the export at leaf {index}");
            leafHash = MerkleTree.LeafHash(_events[index].Leaf);
        }
        else if (proof.LeafHash is { } given)
            leafHash = given;
        else
            return new VerifierCheck(name, false, "the proof names neither a sequence nor a leaf hash");
        var root = TrustedRoot(proof.TreeSize, proof.RootHash, rootsBySize, out var conflict);
        if (conflict is not null)
            return new VerifierCheck(name, false, conflict);
        if (root is null)
            return new VerifierCheck(name, false, $"no root for tree size {proof.TreeSize}: give it in the proof, as a checkpoint, or export more events");
        return MerkleProofs.VerifyInclusion(proof.LeafIndex, proof.TreeSize, leafHash, proof.Path, Convert.FromHexString(root))
            ? new VerifierCheck(name, true, $"leaf {proof.LeafIndex} is in the tree of size {proof.TreeSize} with root {root} ({proof.Path.Count} hashes)")
            : new VerifierCheck(name, false, $"the audit path does not lead from leaf {proof.LeafIndex} to root {root} of size {proof.TreeSize}");
    }

    private VerifierCheck Consistency(ConsistencyProof proof, Dictionary<long, string> rootsBySize)
    {
        var name = $"consistency {proof.FirstSize} -> {proof.SecondSize}";
        var first = TrustedRoot(proof.FirstSize, proof.FirstRoot, rootsBySize, out var conflict);
        if (conflict is not null)
            return new VerifierCheck(name, false, conflict);
        var second = TrustedRoot(proof.SecondSize, proof.SecondRoot, rootsBySize, out conflict);
        if (conflict is not null)
            return new VerifierCheck(name, false, conflict);
        if (first is null || second is null)
            return new VerifierCheck(name, false, "a root is unknown: give both in the proof, as checkpoints, or export more events");
        return MerkleProofs.VerifyConsistency(proof.FirstSize, proof.SecondSize, Convert.FromHexString(first), Convert.FromHexString(second), proof.Path)
            ? new VerifierCheck(name, true, $"the tree of size {proof.SecondSize} (root {second}) extends the tree of size {proof.FirstSize} (root {first})")
            : new VerifierCheck(name, false, $"the proof does not show that root {second} extends root {first}: history was rewritten, or the proof is wrong");
    }
}
