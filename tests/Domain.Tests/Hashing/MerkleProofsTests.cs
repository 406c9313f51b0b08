using System.Security.Cryptography;
using Sandbox.Audited.Domain.Hashing;

namespace Sandbox.Audited.Domain.Tests.Hashing;

/// <summary>RFC 9162 proof verification: the published RFC 6962 test vectors, and proofs from the RFC's recursive definitions.</summary>
public sealed class MerkleProofsTests
{
    private static readonly byte[][] VectorLeaves = Rfc6962Vectors.Leaves;

    private static byte[] Root(int size) => Convert.FromHexString(Rfc6962Vectors.Roots[size]);

    private static byte[][] Hashes(params string[] hex) => hex.Select(Convert.FromHexString).ToArray();

    [Fact]
    public void TheVectorRootsAreTheTreeHashes()
    {
        var tree = new MerkleTree();
        Assert.Equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", tree.Root);
        for (var size = 1; size <= 8; size++)
        {
            tree.Add(VectorLeaves[size - 1]);
            Assert.Equal(Rfc6962Vectors.Roots[size], tree.Root);
        }
    }

    public static TheoryData<int, int, string[]> InclusionVectors => new()
    {
        { 0, 1, [] },
        { 0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7", "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e", "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"] },
        { 5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b", "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0", "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"] },
        { 2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"] },
        { 1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d", "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e", "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"] },
    };

    [Theory]
    [MemberData(nameof(InclusionVectors))]
    public void PublishedInclusionProofsVerify(int index, int size, string[] path)
    {
        var leaf = MerkleTree.LeafHash(VectorLeaves[index]);

        Assert.True(MerkleProofs.VerifyInclusion(index, size, leaf, Hashes(path), Root(size)));
        Assert.Equal(path, Rfc9162.Path(index, VectorLeaves[..size]).Select(Convert.ToHexStringLower));
        // The same path proves nothing for another leaf, another index, another root, or a tree of another shape.
        Assert.False(MerkleProofs.VerifyInclusion(index, size, MerkleTree.LeafHash([0xff]), Hashes(path), Root(size)));
        Assert.False(MerkleProofs.VerifyInclusion(index + 1, size, leaf, Hashes(path), Root(size)));
        Assert.False(MerkleProofs.VerifyInclusion(index, size * 2, leaf, Hashes(path), Root(size)));
        Assert.False(MerkleProofs.VerifyInclusion(index, size, leaf, Hashes(path), SHA256.HashData([1])));
        Assert.False(MerkleProofs.VerifyInclusion(index, size, leaf, [.. Hashes(path), Root(size)], Root(size)));
    }

    public static TheoryData<int, int, string[]> ConsistencyVectors => new()
    {
        { 1, 1, [] },
        { 1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7", "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e", "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"] },
        { 6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a", "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0", "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"] },
        { 2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e", "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"] },
    };

    [Theory]
    [MemberData(nameof(ConsistencyVectors))]
    public void PublishedConsistencyProofsVerify(int first, int second, string[] proof)
    {
        Assert.True(MerkleProofs.VerifyConsistency(first, second, Root(first), Root(second), Hashes(proof)));
        Assert.Equal(proof, Rfc9162.Proof(first, VectorLeaves[..second]).Select(Convert.ToHexStringLower));
        // Another first root (a rewritten history) or second root fails.
        Assert.False(MerkleProofs.VerifyConsistency(first, second, SHA256.HashData([1]), Root(second), Hashes(proof)));
        if (first != second)
        {
            Assert.False(MerkleProofs.VerifyConsistency(first, second, Root(first), Root(second - 1), Hashes(proof)));
            Assert.False(MerkleProofs.VerifyConsistency(first, second, Root(first), Root(second), Hashes(proof)[..^1]));
        }
    }

    [Fact]
    public void EveryProofOfTheRecursiveDefinitionsVerifiesAndNoCorruptedOneDoes()
    {
        var leaves = Enumerable.Range(0, 40).Select(i => BitConverter.GetBytes(i * 7919)).ToArray();
        for (var size = 1; size <= leaves.Length; size++)
        {
            var tree = leaves[..size];
            var root = Rfc9162.Root(tree);
            for (var index = 0; index < size; index++)
            {
                var path = Rfc9162.Path(index, tree);
                var leaf = MerkleTree.LeafHash(tree[index]);
                Assert.True(MerkleProofs.VerifyInclusion(index, size, leaf, path, root), $"inclusion of {index} in {size}");
                for (var i = 0; i < path.Count; i++)
                {
                    var corrupted = path.Select(p => p.ToArray()).ToList();
                    corrupted[i][i % 32] ^= 1;
                    Assert.False(MerkleProofs.VerifyInclusion(index, size, leaf, corrupted, root));
                }
            }
            for (var first = 1; first <= size; first++)
            {
                var proof = Rfc9162.Proof(first, tree);
                var firstRoot = Rfc9162.Root(tree[..first]);
                Assert.True(MerkleProofs.VerifyConsistency(first, size, firstRoot, root, proof), $"consistency {first} -> {size}");
                for (var i = 0; i < proof.Count; i++)
                {
                    var corrupted = proof.Select(p => p.ToArray()).ToList();
                    corrupted[i][31 - i % 32] ^= 0x80;
                    Assert.False(MerkleProofs.VerifyConsistency(first, size, firstRoot, root, corrupted));
                }
                if (first < size)
                    Assert.False(MerkleProofs.VerifyConsistency(first, size, Rfc9162.Root([.. tree[..(first - 1)], [0xee]]), root, proof));
            }
        }
    }

    [Fact]
    public void OutOfRangeArgumentsFail()
    {
        var leaf = MerkleTree.LeafHash(VectorLeaves[0]);
        Assert.False(MerkleProofs.VerifyInclusion(0, 0, leaf, [], SHA256.HashData([])));
        Assert.False(MerkleProofs.VerifyInclusion(-1, 8, leaf, [], Root(8)));
        Assert.False(MerkleProofs.VerifyConsistency(8, 6, Root(8), Root(6), []));
        Assert.False(MerkleProofs.VerifyConsistency(2, 8, Root(2), Root(8), []));
        Assert.True(MerkleProofs.VerifyConsistency(0, 8, SHA256.HashData([]), Root(8), []));
    }
}
