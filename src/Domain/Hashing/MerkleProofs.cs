namespace Sandbox.Audited.Domain.Hashing;

/// <summary>
/// Verification of Merkle audit paths (inclusion proofs) and consistency proofs, exactly the algorithms of RFC 9162
/// sections 2.1.3.2 and 2.1.4.2 over the tree hash of <see cref="MerkleTree"/> (RFC 6962): pure functions over hashes,
/// for an auditor who holds a root (from a signed checkpoint) and a proof (from the service or anyone else).
/// </summary>
public static class MerkleProofs
{
    /// <summary>Whether the audit path proves the leaf (its leaf hash, see <see cref="MerkleTree.LeafHash"/>) at leafIndex in the tree of treeSize leaves with this root.</summary>
    public static bool VerifyInclusion(long leafIndex, long treeSize, ReadOnlySpan<byte> leafHash, IReadOnlyList<byte[]> path, ReadOnlySpan<byte> root)
    {
        if (leafIndex < 0 || leafIndex >= treeSize || leafHash.Length != 32 || root.Length != 32)
            return false;
        var fn = leafIndex;
        var sn = treeSize - 1;
        var r = leafHash.ToArray();
        foreach (var p in path)
        {
            if (sn == 0 || p.Length != 32)
                return false;
            if ((fn & 1) == 1 || fn == sn)
            {
                r = MerkleTree.NodeHash(p, r);
                while ((fn & 1) == 0 && fn != 0)
                {
                    fn >>= 1;
                    sn >>= 1;
                }
            }
            else
                r = MerkleTree.NodeHash(r, p);
            fn >>= 1;
            sn >>= 1;
        }
        return sn == 0 && r.AsSpan().SequenceEqual(root);
    }

    /// <summary>
    /// Whether the consistency proof shows that the tree of secondSize leaves with secondRoot extends the tree of
    /// firstSize leaves with firstRoot (the first firstSize leaves unchanged). Equal sizes need an empty proof and equal
    /// roots; an empty first tree is consistent with any tree (RFC 9162 requires 0 &lt; first &lt; second for a proof).
    /// </summary>
    public static bool VerifyConsistency(long firstSize, long secondSize, ReadOnlySpan<byte> firstRoot, ReadOnlySpan<byte> secondRoot, IReadOnlyList<byte[]> proof)
    {
        if (firstSize < 0 || secondSize < firstSize || firstRoot.Length != 32 || secondRoot.Length != 32)
            return false;
        if (firstSize == secondSize)
            return proof.Count == 0 && firstRoot.SequenceEqual(secondRoot);
        if (firstSize == 0)
            return proof.Count == 0;
        if (proof.Count == 0 || proof.Any(p => p.Length != 32))
            return false;

        var path = (firstSize & (firstSize - 1)) == 0 ? [firstRoot.ToArray(), .. proof] : proof.ToList();
        var fn = firstSize - 1;
        var sn = secondSize - 1;
        while ((fn & 1) == 1)
        {
            fn >>= 1;
            sn >>= 1;
        }
        var fr = path[0];
        var sr = path[0];
        foreach (var c in path.Skip(1))
        {
            if (sn == 0)
                return false;
            if ((fn & 1) == 1 || fn == sn)
            {
                fr = MerkleTree.NodeHash(c, fr);
                sr = MerkleTree.NodeHash(c, sr);
                while ((fn & 1) == 0 && fn != 0)
                {
                    fn >>= 1;
                    sn >>= 1;
                }
            }
            else
                sr = MerkleTree.NodeHash(sr, c);
            fn >>= 1;
            sn >>= 1;
        }
        return sn == 0 && fr.AsSpan().SequenceEqual(firstRoot) && sr.AsSpan().SequenceEqual(secondRoot);
    }
}
