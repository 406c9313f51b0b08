using System.Security.Cryptography;
using System.Text;

namespace Sandbox.Audited.Domain.Hashing;

/// <summary>
/// The Merkle tree hash of RFC 6962 (section 2.1), built one leaf at a time in O(log n) memory:
/// leaf = SHA-256(0x00 ‖ data), node = SHA-256(0x01 ‖ left ‖ right), the left subtree holding the largest power of
/// two below n leaves; the empty tree hashes to SHA-256 of nothing. <see cref="Root"/> may be read at any point.
/// </summary>
public sealed class MerkleTree
{
    // Perfect subtrees from left to right, their sizes strictly decreasing powers of two.
    private readonly List<(byte[] Hash, long Size)> _subtrees = [];

    public long Size { get; private set; }

    public void Add(ReadOnlySpan<byte> leafData)
    {
        var hash = LeafHash(leafData);
        long size = 1;
        while (_subtrees.Count > 0 && _subtrees[^1].Size == size)
        {
            hash = NodeHash(_subtrees[^1].Hash, hash);
            size *= 2;
            _subtrees.RemoveAt(_subtrees.Count - 1);
        }
        _subtrees.Add((hash, size));
        Size++;
    }

    /// <summary>The root over every leaf added so far, as 64 lowercase hex characters.</summary>
    public string Root
    {
        get
        {
            if (_subtrees.Count == 0)
                return Convert.ToHexStringLower(SHA256.HashData([]));
            var root = _subtrees[^1].Hash;
            for (var i = _subtrees.Count - 2; i >= 0; i--)
                root = NodeHash(_subtrees[i].Hash, root);
            return Convert.ToHexStringLower(root);
        }
    }

    public static byte[] LeafHash(ReadOnlySpan<byte> data)
    {
        var buffer = new byte[1 + data.Length];
        data.CopyTo(buffer.AsSpan(1));
        return SHA256.HashData(buffer);
    }

    public static byte[] NodeHash(ReadOnlySpan<byte> left, ReadOnlySpan<byte> right)
    {
        Span<byte> buffer = stackalloc byte[1 + 32 + 32];
        buffer[0] = 1;
        left.CopyTo(buffer[1..]);
        right.CopyTo(buffer[33..]);
        return SHA256.HashData(buffer);
    }

    /// <summary>
    /// What a checkpoint commits to for one event: its global sequence, stream, version and chain hash (which covers
    /// its type, data and time), as the UTF-8 of "seq:streamId:version:hash".
    /// </summary>
    public static byte[] EventLeaf(long sequence, Guid streamId, long version, string? chainHash) =>
        Encoding.UTF8.GetBytes(FormattableString.Invariant($"{sequence}:{streamId:D}:{version}:{chainHash}"));
}
