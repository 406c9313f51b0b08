using System.Security.Cryptography;
using System.Text;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Merkle;
using Sandbox.Audited.Domain.Tests.Hashing;

namespace Sandbox.Audited.Domain.Tests.Merkle;

public sealed class TreeProofsTests
{
    private static readonly byte[][] VectorLeaves = Rfc6962Vectors.Leaves;

    private static readonly string[] VectorRoots = Rfc6962Vectors.Roots;

    /// <summary>What a store keeps: every node each append completed.</summary>
    private sealed class Store
    {
        public Dictionary<NodeId, byte[]> Nodes { get; } = [];

        public CompactRange Tree { get; }

        public Store(IEnumerable<byte[]> leaves)
        {
            Tree = new CompactRange(0, _ => throw new InvalidOperationException());
            foreach (var leaf in leaves)
                foreach (var (id, hash) in Tree.Append(MerkleTree.LeafHash(leaf)))
                    Nodes.Add(id, hash);
        }

        public string Root(long size) => Convert.ToHexStringLower(TreeProofs.RangeHash(new LeafRange(0, size), id => Nodes[id]));

        public List<string> Inclusion(long index, long size) =>
            TreeProofs.InclusionRanges(index, size).Select(r => Convert.ToHexStringLower(TreeProofs.RangeHash(r, id => Nodes[id]))).ToList();

        public List<string> Consistency(long first, long second) =>
            TreeProofs.ConsistencyRanges(first, second).Select(r => Convert.ToHexStringLower(TreeProofs.RangeHash(r, id => Nodes[id]))).ToList();
    }

    [Fact]
    public void RootsAtEverySizeAreThePublishedVectors()
    {
        var store = new Store(VectorLeaves);
        for (var size = 0; size <= 8; size++)
            Assert.Equal(VectorRoots[size], store.Root(size));
        Assert.Equal(VectorRoots[8], Convert.ToHexStringLower(store.Tree.Root()));
    }

    [Theory]
    [InlineData(0, 8, "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7 5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e 6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")]
    [InlineData(5, 8, "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0 d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]
    [InlineData(2, 3, "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]
    [InlineData(1, 5, "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d 5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")]
    [InlineData(0, 1, "")]
    public void InclusionProofsAreThePublishedVectors(long index, long size, string path) =>
        Assert.Equal(path.Split(' ', StringSplitOptions.RemoveEmptyEntries), new Store(VectorLeaves).Inclusion(index, size));

    [Theory]
    [InlineData(1, 1, "")]
    [InlineData(1, 8, "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7 5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e 6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")]
    [InlineData(6, 8, "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0 d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]
    [InlineData(2, 5, "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")]
    [InlineData(6, 7, "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]
    public void ConsistencyProofsAreThePublishedVectors(long first, long second, string proof) =>
        Assert.Equal(proof.Split(' ', StringSplitOptions.RemoveEmptyEntries), new Store(VectorLeaves).Consistency(first, second));

    // RFC 9162 section 2.1, written recursively as the RFC states it, to hold the stored-subtree generation to it.
    private static byte[] Mth(ArraySegment<byte[]> d) => d.Count switch
    {
        0 => SHA256.HashData([]),
        1 => MerkleTree.LeafHash(d[0]),
        _ => MerkleTree.NodeHash(Mth(d[..K(d.Count)]), Mth(d[K(d.Count)..])),
    };

    private static int K(int n)
    {
        var k = 1;
        while (k * 2 < n)
            k *= 2;
        return k;
    }

    private static List<byte[]> Path(int m, ArraySegment<byte[]> d)
    {
        if (d.Count <= 1)
            return [];
        var k = K(d.Count);
        return m < k ? [.. Path(m, d[..k]), Mth(d[k..])] : [.. Path(m - k, d[k..]), Mth(d[..k])];
    }

    private static List<byte[]> SubProof(int m, ArraySegment<byte[]> d, bool b)
    {
        if (m == d.Count)
            return b ? [] : [Mth(d)];
        var k = K(d.Count);
        return m <= k ? [.. SubProof(m, d[..k], b), Mth(d[k..])] : [.. SubProof(m - k, d[k..], false), Mth(d[..k])];
    }

    private static List<string> Hex(IEnumerable<byte[]> hashes) => hashes.Select(Convert.ToHexStringLower).ToList();

    [Fact]
    public void EveryProofUpTo200LeavesMatchesTheRecursiveDefinition()
    {
        var leaves = Enumerable.Range(0, 200).Select(i => Encoding.UTF8.GetBytes($"leaf {i}")).ToArray();
        var store = new Store(leaves);
        for (var n = 1; n <= leaves.Length; n++)
        {
            var d = new ArraySegment<byte[]>(leaves, 0, n);
            Assert.Equal(Convert.ToHexStringLower(Mth(d)), store.Root(n));
            for (var m = 0; m < n; m++)
                Assert.Equal(Hex(Path(m, d)), store.Inclusion(m, n));
            for (var m = 1; m <= n; m++)
                Assert.Equal(m == n ? [] : Hex(SubProof(m, d, true)), store.Consistency(m, n));
        }
    }

    [Fact]
    public void AProofNeedsOnlyLogarithmicallyManyStoredNodes()
    {
        var size = (1L << 40) + 12345;
        var ranges = TreeProofs.InclusionRanges(size - 7, size).Concat(TreeProofs.ConsistencyRanges(size / 3, size));
        Assert.InRange(TreeProofs.NodesFor(ranges).Count, 1, 4 * 41);
    }

    [Fact]
    public void LeavesOutsideTheTreeHaveNoProof()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => TreeProofs.InclusionRanges(8, 8));
        Assert.Throws<ArgumentOutOfRangeException>(() => TreeProofs.ConsistencyRanges(9, 8));
    }

    [Fact]
    public void ACompactRangeResumedFromStoredNodesContinuesTheSameTree()
    {
        var leaves = Enumerable.Range(0, 50).Select(i => Encoding.UTF8.GetBytes($"leaf {i}")).ToArray();
        var whole = new Store(leaves);
        var first = new Store(leaves[..21]);
        var resumed = new CompactRange(21, id => first.Nodes[id]);
        foreach (var leaf in leaves[21..])
            foreach (var (id, hash) in resumed.Append(MerkleTree.LeafHash(leaf)))
                Assert.Equal(whole.Nodes[id], hash);
        Assert.Equal(whole.Root(50), Convert.ToHexStringLower(resumed.Root()));
    }
}
