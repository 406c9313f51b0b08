using System.Numerics;
using System.Security.Cryptography;
using Sandbox.Audited.Domain.Hashing;

namespace Sandbox.Audited.Domain.Merkle;

/// <summary>
/// A perfect subtree: the 2^Level leaves from Index·2^Level. Every hash a proof needs is a fold of these, so a
/// store that keeps each one once it is complete answers any proof in O(log n) lookups.
/// </summary>
public readonly record struct NodeId(int Level, long Index)
{
    public long Start => Index << Level;

    public long End => (Index + 1) << Level;
}

/// <summary>A run of leaves [Start, End) whose RFC 6962 tree hash (MTH) a proof carries.</summary>
public readonly record struct LeafRange(long Start, long End);

/// <summary>
/// Proof generation of RFC 9162 section 2.1.3 (inclusion, PATH) and 2.1.4 (consistency, PROOF/SUBPROOF), stated as
/// which ranges of leaves the proof hashes; the hashes themselves come from stored perfect subtrees.
/// </summary>
public static class TreeProofs
{
    /// <summary>The ranges whose hashes form the audit path of leaf <paramref name="index"/> in a tree of <paramref name="size"/>, leaf side first.</summary>
    public static IReadOnlyList<LeafRange> InclusionRanges(long index, long size)
    {
        if (size < 1 || index < 0 || index >= size)
            throw new ArgumentOutOfRangeException(nameof(index), $"Leaf {index} is not in a tree of {size}.");
        var topDown = new List<LeafRange>();
        var (start, end) = (0L, size);
        while (end - start > 1)
        {
            var k = LargestPowerOfTwoBelow(end - start);
            if (index - start < k)
            {
                topDown.Add(new LeafRange(start + k, end));
                end = start + k;
            }
            else
            {
                topDown.Add(new LeafRange(start, start + k));
                start += k;
            }
        }
        topDown.Reverse();
        return topDown;
    }

    /// <summary>The ranges whose hashes form the consistency proof from a tree of <paramref name="first"/> to one of <paramref name="second"/>.</summary>
    public static IReadOnlyList<LeafRange> ConsistencyRanges(long first, long second)
    {
        if (first < 0 || first > second)
            throw new ArgumentOutOfRangeException(nameof(first), $"No consistency proof from {first} to {second}.");
        var topDown = new List<LeafRange>();
        if (first == 0 || first == second)
            return topDown;
        var (start, end, m, whole) = (0L, second, first, true);
        while (m != end - start)
        {
            var k = LargestPowerOfTwoBelow(end - start);
            if (m <= k)
            {
                topDown.Add(new LeafRange(start + k, end));
                end = start + k;
            }
            else
            {
                topDown.Add(new LeafRange(start, start + k));
                m -= k;
                start += k;
                whole = false;
            }
        }
        if (!whole)
            topDown.Add(new LeafRange(start, end)); // the old tree's own subtree, unless it is the whole old tree
        topDown.Reverse();
        return topDown;
    }

    /// <summary>The perfect subtrees that make up a range of a proof (left to right, sizes decreasing).</summary>
    public static IReadOnlyList<NodeId> PerfectSubtrees(LeafRange range)
    {
        var nodes = new List<NodeId>();
        var start = range.Start;
        while (start < range.End)
        {
            var level = start == 0 ? 62 : BitOperations.TrailingZeroCount(start);
            while ((1L << level) > range.End - start)
                level--;
            nodes.Add(new NodeId(level, start >> level));
            start += 1L << level;
        }
        return nodes;
    }

    /// <summary>Every stored node the given ranges need, each once.</summary>
    public static IReadOnlyList<NodeId> NodesFor(IEnumerable<LeafRange> ranges) =>
        ranges.SelectMany(PerfectSubtrees).Distinct().ToList();

    /// <summary>
    /// The RFC 6962 hash of a range from its perfect subtrees: in a proof's ranges the left child of every split is the
    /// largest perfect subtree, so the hash is a right fold. An empty range (the empty tree) hashes to SHA-256 of nothing.
    /// </summary>
    public static byte[] RangeHash(LeafRange range, Func<NodeId, byte[]> node)
    {
        var nodes = PerfectSubtrees(range);
        if (nodes.Count == 0)
            return SHA256.HashData([]);
        var hash = node(nodes[^1]);
        for (var i = nodes.Count - 2; i >= 0; i--)
            hash = MerkleTree.NodeHash(node(nodes[i]), hash);
        return hash;
    }

    public static long LargestPowerOfTwoBelow(long n) => n < 2
        ? throw new ArgumentOutOfRangeException(nameof(n))
        : 1L << (63 - BitOperations.LeadingZeroCount((ulong)(n - 1)));
}

/// <summary>
/// The right edge of a tree (its perfect subtrees, largest first): enough to append leaves and read the root without
/// the leaves before. Each append yields the nodes it completed, for the store to keep.
/// </summary>
public sealed class CompactRange
{
    private readonly List<(NodeId Id, byte[] Hash)> _edge;

    /// <summary>Starts from a tree of <paramref name="size"/> leaves given the hashes of its perfect subtrees (<see cref="TreeProofs.PerfectSubtrees"/> of [0, size)).</summary>
    public CompactRange(long size, Func<NodeId, byte[]> node)
    {
        Size = size;
        _edge = TreeProofs.PerfectSubtrees(new LeafRange(0, size)).Select(id => (id, node(id))).ToList();
    }

    public long Size { get; private set; }

    public IReadOnlyList<(NodeId Id, byte[] Hash)> Append(byte[] leafHash)
    {
        var completed = new List<(NodeId, byte[])>();
        var (id, hash) = (new NodeId(0, Size), leafHash);
        completed.Add((id, hash));
        while (_edge.Count > 0 && _edge[^1].Id.Level == id.Level)
        {
            hash = MerkleTree.NodeHash(_edge[^1].Hash, hash);
            id = new NodeId(id.Level + 1, id.Index >> 1);
            _edge.RemoveAt(_edge.Count - 1);
            completed.Add((id, hash));
        }
        _edge.Add((id, hash));
        Size++;
        return completed;
    }

    public byte[] Root()
    {
        if (_edge.Count == 0)
            return SHA256.HashData([]);
        var root = _edge[^1].Hash;
        for (var i = _edge.Count - 2; i >= 0; i--)
            root = MerkleTree.NodeHash(_edge[i].Hash, root);
        return root;
    }
}
