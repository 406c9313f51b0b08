using System.Security.Cryptography;
using System.Text;
using Sandbox.Audited.Domain.Hashing;

namespace Sandbox.Audited.Domain.Tests.Hashing;

public sealed class MerkleTreeTests
{
    // RFC 6962 section 2.1, written the way the RFC states it (recursive), to hold the streaming builder to it.
    private static byte[] Reference(IReadOnlyList<byte[]> leaves)
    {
        if (leaves.Count == 0)
            return SHA256.HashData([]);
        if (leaves.Count == 1)
            return SHA256.HashData([0, .. leaves[0]]);
        var k = 1;
        while (k * 2 < leaves.Count)
            k *= 2;
        return SHA256.HashData([1, .. Reference(leaves.Take(k).ToList()), .. Reference(leaves.Skip(k).ToList())]);
    }

    private static List<byte[]> Leaves(int count) =>
        Enumerable.Range(0, count).Select(i => Encoding.UTF8.GetBytes($"leaf {i}")).ToList();

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(7)]
    [InlineData(8)]
    [InlineData(9)]
    [InlineData(33)]
    [InlineData(1000)]
    public void TheRootIsTheRfc6962TreeHash(int count)
    {
        var leaves = Leaves(count);
        var tree = new MerkleTree();
        foreach (var leaf in leaves)
            tree.Add(leaf);

        Assert.Equal(count, tree.Size);
        Assert.Equal(Convert.ToHexStringLower(Reference(leaves)), tree.Root);
    }

    [Fact]
    public void TheRootCanBeReadAtEverySizeOnTheWay()
    {
        var leaves = Leaves(20);
        var tree = new MerkleTree();
        for (var i = 0; i < leaves.Count; i++)
        {
            tree.Add(leaves[i]);
            Assert.Equal(Convert.ToHexStringLower(Reference(leaves.Take(i + 1).ToList())), tree.Root);
        }
    }

    [Fact]
    public void RemovingOrChangingAnyOneLeafChangesTheRoot()
    {
        var leaves = Leaves(13);
        var root = Root(leaves);
        for (var i = 0; i < leaves.Count; i++)
        {
            Assert.NotEqual(root, Root(leaves.Where((_, j) => j != i).ToList()));
            Assert.NotEqual(root, Root(leaves.Select((leaf, j) => j == i ? [.. leaf, (byte)'!'] : leaf).ToList()));
        }
    }

    [Fact]
    public void AnEventLeafNamesSequenceStreamVersionAndHash()
    {
        var stream = Guid.Parse("01a21711-8c4e-75ad-91c8-2e9055d7a70c");

        Assert.Equal($"42:{stream}:3:abc", Encoding.UTF8.GetString(MerkleTree.EventLeaf(42, stream, 3, "abc")));
    }

    private static string Root(IEnumerable<byte[]> leaves)
    {
        var tree = new MerkleTree();
        foreach (var leaf in leaves)
            tree.Add(leaf);
        return tree.Root;
    }
}
