using Npgsql;
using NpgsqlTypes;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Merkle;

namespace Sandbox.Audited.Audit.Trail;

/// <summary>An event as a leaf of its tenant's tree: what its leaf commits to (<see cref="MerkleTree.EventLeaf"/>).</summary>
public sealed record TreeLeaf(long Sequence, long LeafIndex, Guid StreamId, long Version, string? ChainHash)
{
    public string LeafData => System.Text.Encoding.UTF8.GetString(MerkleTree.EventLeaf(Sequence, StreamId, Version, ChainHash));

    public byte[] LeafHash => MerkleTree.LeafHash(MerkleTree.EventLeaf(Sequence, StreamId, Version, ChainHash));
}

/// <summary>
/// Each tenant's Merkle tree kept in PostgreSQL (sandbox.audit_tree_leaves / audit_tree_nodes): extended with the
/// events after its last leaf, so a checkpoint costs O(new events); every complete subtree is stored once, so a root
/// or proof at any size costs O(log n) lookups (<see cref="TreeProofs"/>).
/// </summary>
public sealed class AuditTree(NpgsqlDataSource database)
{
    private const int Chunk = 20_000;

    /// <summary>
    /// Adds the tenant's events up to <paramref name="toSequence"/> (which must be settled: nothing lower can still
    /// commit) and returns the tree size that covers exactly the events up to it.
    /// </summary>
    public async Task<long> ExtendAsync(string tenant, long toSequence, CancellationToken ct)
    {
        await using (var connection = await database.OpenConnectionAsync(ct))
        await using (var tx = await connection.BeginTransactionAsync(ct))
        {
            // One writer per tenant tree, on any node.
            await using (var lockTree = new NpgsqlCommand("SELECT pg_advisory_xact_lock(hashtextextended('sbx-audit-tree:' || $1, 0))", connection, tx))
            {
                lockTree.Parameters.AddWithValue(tenant);
                await lockTree.ExecuteNonQueryAsync(ct);
            }
            var (size, lastSequence) = await LastLeafAsync(connection, tx, tenant, ct);
            if (lastSequence < toSequence)
            {
                var edge = await NodesAsync(connection, tx, tenant, TreeProofs.PerfectSubtrees(new LeafRange(0, size)), ct);
                var tree = new CompactRange(size, id => edge[id]);
                // The new events first (a range of the primary key), then their owners: O(new events), never a walk
                // over every stream of the tenant, which the planner may otherwise prefer.
                await using var source = database.CreateCommand($"""
                    WITH e AS MATERIALIZED (SELECT seq_id, stream_id, version, headers FROM sandbox.mt_events WHERE seq_id > @from AND seq_id <= @to)
                    SELECT e.seq_id, e.stream_id, e.version, e.headers ->> 'hash'
                    FROM e {AuditQueries.StreamOwner}
                    WHERE {AuditQueries.OwnedBy}
                    ORDER BY e.seq_id
                    """);
                source.CommandTimeout = 0;
                source.Parameters.Add(new NpgsqlParameter("tenant", NpgsqlDbType.Text) { Value = tenant });
                source.Parameters.Add(new NpgsqlParameter("from", NpgsqlDbType.Bigint) { Value = lastSequence });
                source.Parameters.Add(new NpgsqlParameter("to", NpgsqlDbType.Bigint) { Value = toSequence });
                await using var reader = await source.ExecuteReaderAsync(ct);
                var leaves = new List<(long Index, long Sequence)>(Chunk);
                var nodes = new List<(NodeId Id, byte[] Hash)>(Chunk * 2);
                while (await reader.ReadAsync(ct))
                {
                    var sequence = reader.GetInt64(0);
                    leaves.Add((tree.Size, sequence));
                    nodes.AddRange(tree.Append(MerkleTree.LeafHash(MerkleTree.EventLeaf(
                        sequence, reader.GetGuid(1), reader.GetInt64(2), reader.IsDBNull(3) ? null : reader.GetString(3)))));
                    if (leaves.Count >= Chunk)
                        await WriteAsync(connection, tenant, leaves, nodes, ct);
                }
                await WriteAsync(connection, tenant, leaves, nodes, ct);
            }
            await tx.CommitAsync(ct);
        }
        return await SizeAtAsync(tenant, toSequence, ct);
    }

    /// <summary>The number of the tenant's stored leaves up to a sequence.</summary>
    public async Task<long> SizeAtAsync(string tenant, long sequence, CancellationToken ct)
    {
        // Leaf indexes grow with sequences, so the last leaf at or below it is one step back along (tenant, seq_id).
        await using var command = database.CreateCommand(
            "SELECT leaf_index + 1 FROM sandbox.audit_tree_leaves WHERE tenant = $1 AND seq_id <= $2 ORDER BY seq_id DESC LIMIT 1");
        command.Parameters.AddWithValue(tenant);
        command.Parameters.AddWithValue(sequence);
        return await command.ExecuteScalarAsync(ct) is long size ? size : 0;
    }

    /// <summary>How many leaves the tenant's stored tree has.</summary>
    public async Task<long> SizeAsync(string tenant, CancellationToken ct)
    {
        await using var connection = await database.OpenConnectionAsync(ct);
        return (await LastLeafAsync(connection, null, tenant, ct)).Size;
    }

    public async Task<byte[]> RootAsync(string tenant, long size, CancellationToken ct)
    {
        var range = new LeafRange(0, size);
        var nodes = await NodesAsync(tenant, TreeProofs.PerfectSubtrees(range), ct);
        return TreeProofs.RangeHash(range, id => nodes[id]);
    }

    /// <summary>The hashes of the given proof ranges, fetched in one query.</summary>
    public async Task<IReadOnlyList<byte[]>> HashesAsync(string tenant, IReadOnlyList<LeafRange> ranges, CancellationToken ct)
    {
        var nodes = await NodesAsync(tenant, TreeProofs.NodesFor(ranges), ct);
        return ranges.Select(r => TreeProofs.RangeHash(r, id => nodes[id])).ToList();
    }

    /// <summary>The tenant's leaves for the given sequences, or for every event of a stream (by version); events not in the tree are absent.</summary>
    public async Task<IReadOnlyList<TreeLeaf>> LeavesAsync(string tenant, long? sequence, Guid? streamId, CancellationToken ct)
    {
        if ((sequence is null) == (streamId is null))
            throw new ArgumentException("Give either a sequence or a stream.");
        // From the stream's or the one event's rows to their leaves, so the cost does not grow with the tenant's tree.
        await using var command = database.CreateCommand($"""
            SELECT l.seq_id, l.leaf_index, e.stream_id, e.version, e.headers ->> 'hash'
            FROM sandbox.mt_events e JOIN sandbox.audit_tree_leaves l ON l.seq_id = e.seq_id AND l.tenant = @tenant
            WHERE {(streamId is null ? "e.seq_id = @sequence" : "e.stream_id = @stream")}
            ORDER BY e.seq_id
            """);
        command.Parameters.Add(new NpgsqlParameter("tenant", NpgsqlDbType.Text) { Value = tenant });
        command.Parameters.Add(new NpgsqlParameter("sequence", NpgsqlDbType.Bigint) { Value = sequence ?? 0 });
        command.Parameters.Add(new NpgsqlParameter("stream", NpgsqlDbType.Uuid) { Value = streamId ?? Guid.Empty });
        var leaves = new List<TreeLeaf>();
        await using var reader = await command.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
            leaves.Add(new TreeLeaf(reader.GetInt64(0), reader.GetInt64(1), reader.GetGuid(2), reader.GetInt64(3), reader.IsDBNull(4) ? null : reader.GetString(4)));
        return leaves;
    }

    /// <summary>Whether any of the tenant's leaves from <paramref name="fromIndex"/> on is an event of another stream than <paramref name="except"/>.</summary>
    public async Task<bool> GrewOutsideAsync(string tenant, long fromIndex, Guid except, CancellationToken ct)
    {
        await using var command = database.CreateCommand("""
            SELECT EXISTS (SELECT 1 FROM sandbox.audit_tree_leaves l JOIN sandbox.mt_events e ON e.seq_id = l.seq_id
                           WHERE l.tenant = $1 AND l.leaf_index >= $2 AND e.stream_id <> $3)
            """);
        command.Parameters.AddWithValue(tenant);
        command.Parameters.AddWithValue(fromIndex);
        command.Parameters.AddWithValue(except);
        return (bool)(await command.ExecuteScalarAsync(ct))!;
    }

    /// <summary>
    /// Recomputes the tenant's stored leaves from the events as stored now, in one pass: the stored tree must be what
    /// the events give, or the proofs it serves would not be about the record. Returns the first difference, if any.
    /// </summary>
    public async Task<(long LeavesChecked, string? Difference)> VerifyAsync(string tenant, CancellationToken ct)
    {
        await using var command = database.CreateCommand($"""
            SELECT l.leaf_index, l.seq_id, n.hash, e.stream_id, e.version, e.headers ->> 'hash', {AuditQueries.OwnedBy}
            FROM sandbox.audit_tree_leaves l
            JOIN sandbox.audit_tree_nodes n ON n.tenant = l.tenant AND n.level = 0 AND n.idx = l.leaf_index
            LEFT JOIN sandbox.mt_events e ON e.seq_id = l.seq_id
            LEFT {AuditQueries.StreamOwner.Trim()}
            WHERE l.tenant = @tenant ORDER BY l.leaf_index
            """);
        command.CommandTimeout = 0;
        command.Parameters.Add(new NpgsqlParameter("tenant", NpgsqlDbType.Text) { Value = tenant });
        long expected = 0;
        await using var reader = await command.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
        {
            var (index, sequence) = (reader.GetInt64(0), reader.GetInt64(1));
            if (index != expected)
                return (expected, $"leaf {expected} is missing from the stored tree");
            if (reader.IsDBNull(3))
                return (expected, $"leaf {index} is event {sequence}, which is no longer in the record");
            if (reader.IsDBNull(6) || !reader.GetBoolean(6))
                return (expected, $"leaf {index} is event {sequence}, which is no longer the tenant's");
            var leaf = MerkleTree.LeafHash(MerkleTree.EventLeaf(sequence, reader.GetGuid(3), reader.GetInt64(4), reader.IsDBNull(5) ? null : reader.GetString(5)));
            if (!leaf.AsSpan().SequenceEqual(reader.GetFieldValue<byte[]>(2)))
                return (expected, $"leaf {index} (event {sequence}) does not hash to what the stored tree holds");
            expected++;
        }
        await reader.CloseAsync();
        return (expected, await InnerNodeDifferenceAsync(tenant, ct));
    }

    /// <summary>Each stored inner node must hash its two stored children; with the leaves checked, that covers the whole tree.</summary>
    private async Task<string?> InnerNodeDifferenceAsync(string tenant, CancellationToken ct)
    {
        await using var command = database.CreateCommand("""
            SELECT p.level, p.idx, p.hash, l.hash, r.hash
            FROM sandbox.audit_tree_nodes p
            LEFT JOIN sandbox.audit_tree_nodes l ON l.tenant = p.tenant AND l.level = p.level - 1 AND l.idx = 2 * p.idx
            LEFT JOIN sandbox.audit_tree_nodes r ON r.tenant = p.tenant AND r.level = p.level - 1 AND r.idx = 2 * p.idx + 1
            WHERE p.tenant = $1 AND p.level > 0
            """);
        command.CommandTimeout = 0;
        command.Parameters.AddWithValue(tenant);
        await using var reader = await command.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
            if (reader.IsDBNull(3) || reader.IsDBNull(4)
                || !MerkleTree.NodeHash(reader.GetFieldValue<byte[]>(3), reader.GetFieldValue<byte[]>(4)).AsSpan().SequenceEqual(reader.GetFieldValue<byte[]>(2)))
                return $"stored node {reader.GetInt16(0)}/{reader.GetInt64(1)} is not the hash of its children";
        return null;
    }

    private static async Task<(long Size, long LastSequence)> LastLeafAsync(NpgsqlConnection connection, NpgsqlTransaction? tx, string tenant, CancellationToken ct)
    {
        await using var command = new NpgsqlCommand(
            "SELECT leaf_index + 1, seq_id FROM sandbox.audit_tree_leaves WHERE tenant = $1 ORDER BY leaf_index DESC LIMIT 1", connection, tx);
        command.Parameters.AddWithValue(tenant);
        await using var reader = await command.ExecuteReaderAsync(ct);
        return await reader.ReadAsync(ct) ? (reader.GetInt64(0), reader.GetInt64(1)) : (0, 0);
    }

    private async Task<Dictionary<NodeId, byte[]>> NodesAsync(string tenant, IReadOnlyList<NodeId> ids, CancellationToken ct)
    {
        await using var connection = await database.OpenConnectionAsync(ct);
        return await NodesAsync(connection, null, tenant, ids, ct);
    }

    private static async Task<Dictionary<NodeId, byte[]>> NodesAsync(NpgsqlConnection connection, NpgsqlTransaction? tx, string tenant, IReadOnlyList<NodeId> ids, CancellationToken ct)
    {
        var nodes = new Dictionary<NodeId, byte[]>(ids.Count);
        if (ids.Count == 0)
            return nodes;
        // One primary-key probe per wanted node (LATERAL), whatever the planner guesses about the array's size.
        await using var command = new NpgsqlCommand("""
            SELECT w.level, w.idx, n.hash FROM unnest($2::smallint[], $3::bigint[]) AS w(level, idx)
            CROSS JOIN LATERAL (SELECT x.hash FROM sandbox.audit_tree_nodes x
                                WHERE x.tenant = $1 AND x.level = w.level AND x.idx = w.idx) n
            """, connection, tx);
        command.Parameters.AddWithValue(tenant);
        command.Parameters.AddWithValue(ids.Select(i => (short)i.Level).ToArray());
        command.Parameters.AddWithValue(ids.Select(i => i.Index).ToArray());
        await using var reader = await command.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
            nodes[new NodeId(reader.GetInt16(0), reader.GetInt64(1))] = reader.GetFieldValue<byte[]>(2);
        if (nodes.Count != ids.Count)
            throw new InvalidOperationException($"The stored tree of tenant '{tenant}' lacks {ids.Count - nodes.Count} of the nodes a proof needs.");
        return nodes;
    }

    private static async Task WriteAsync(NpgsqlConnection connection, string tenant, List<(long Index, long Sequence)> leaves,
        List<(NodeId Id, byte[] Hash)> nodes, CancellationToken ct)
    {
        if (leaves.Count == 0)
            return;
        await using (var import = await connection.BeginBinaryImportAsync(
            "COPY sandbox.audit_tree_leaves (tenant, leaf_index, seq_id) FROM STDIN (FORMAT BINARY)", ct))
        {
            foreach (var (index, sequence) in leaves)
            {
                await import.StartRowAsync(ct);
                await import.WriteAsync(tenant, NpgsqlDbType.Text, ct);
                await import.WriteAsync(index, NpgsqlDbType.Bigint, ct);
                await import.WriteAsync(sequence, NpgsqlDbType.Bigint, ct);
            }
            await import.CompleteAsync(ct);
        }
        await using (var import = await connection.BeginBinaryImportAsync(
            "COPY sandbox.audit_tree_nodes (tenant, level, idx, hash) FROM STDIN (FORMAT BINARY)", ct))
        {
            foreach (var (id, hash) in nodes)
            {
                await import.StartRowAsync(ct);
                await import.WriteAsync(tenant, NpgsqlDbType.Text, ct);
                await import.WriteAsync((short)id.Level, NpgsqlDbType.Smallint, ct);
                await import.WriteAsync(id.Index, NpgsqlDbType.Bigint, ct);
                await import.WriteAsync(hash, NpgsqlDbType.Bytea, ct);
            }
            await import.CompleteAsync(ct);
        }
        leaves.Clear();
        nodes.Clear();
    }
}
