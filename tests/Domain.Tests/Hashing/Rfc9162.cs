using System.Security.Cryptography;
using Sandbox.Audited.Domain.Hashing;

namespace Sandbox.Audited.Domain.Tests.Hashing;

/// <summary>The tree hash, audit paths and consistency proofs exactly as RFC 9162 section 2.1 defines them (recursive), to test against.</summary>
public static class Rfc9162
{
    // RFC 9162 section 2.1.1: MTH, as the RFC defines it.
    public static byte[] Root(byte[][] leaves)
    {
        if (leaves.Length == 0)
            return SHA256.HashData([]);
        if (leaves.Length == 1)
            return MerkleTree.LeafHash(leaves[0]);
        var k = SplitPoint(leaves.Length);
        return MerkleTree.NodeHash(Root(leaves[..k]), Root(leaves[k..]));
    }

    // RFC 9162 section 2.1.3.1: PATH(m, D[n]).
    public static List<byte[]> Path(int m, byte[][] leaves)
    {
        if (leaves.Length == 1)
            return [];
        var k = SplitPoint(leaves.Length);
        return m < k
            ? [.. Path(m, leaves[..k]), Root(leaves[k..])]
            : [.. Path(m - k, leaves[k..]), Root(leaves[..k])];
    }

    // RFC 9162 section 2.1.4.1: PROOF(m, D[n]) = SUBPROOF(m, D[n], true).
    public static List<byte[]> Proof(int m, byte[][] leaves) => SubProof(m, leaves, true);

    private static List<byte[]> SubProof(int m, byte[][] leaves, bool whole)
    {
        if (m == leaves.Length)
            return whole ? [] : [Root(leaves)];
        var k = SplitPoint(leaves.Length);
        return m <= k
            ? [.. SubProof(m, leaves[..k], whole), Root(leaves[k..])]
            : [.. SubProof(m - k, leaves[k..], false), Root(leaves[..k])];
    }

    // The largest power of two smaller than n.
    private static int SplitPoint(int n)
    {
        var k = 1;
        while (k * 2 < n)
            k *= 2;
        return k;
    }
}
