using System.Diagnostics;
using Npgsql;
using NpgsqlTypes;
using Sandbox.Audited.Domain.Hashing;

namespace Sandbox.Audited.Audit.Trail;

/// <summary>
/// "Verify what changed since the last checkpoint", in O(new events): the streams of the tenant touched at or after
/// <c>fromSequence</c> (found through the stored owners, an index walk) are each resumed from their last event before
/// it, whose leaf in the stored tree commits its chain hash (the leaf is recomputed and compared), then every newer
/// event's link and hash is checked. Rows read: the new events plus one anchor per touched stream.
/// </summary>
public sealed class IncrementalVerification(NpgsqlDataSource database)
{
    public sealed record Result(VerificationReport Report, long FromSequence, long AnchorsRead);

    /// <summary>
    /// The first sequence after the tenant's last checkpoint (0 when there is none: everything is new), and the first after
    /// the one before it: the stored leaves the last checkpoint added are checked too.
    /// </summary>
    public async Task<(long From, long LeavesFrom)> SinceLastCheckpointAsync(AuditCheckpoints checkpoints, string tenant, CancellationToken ct)
    {
        var heads = (await checkpoints.ListAsync(tenant, ct)).Select(c => c.Head.ToSequence + 1).Order().ToList();
        return (heads.Count > 0 ? heads[^1] : 0, heads.Count > 1 ? heads[^2] : 0);
    }

    public async Task<Result> VerifyAsync(string tenant, long fromSequence, CancellationToken ct) =>
        await VerifyAsync(tenant, fromSequence, fromSequence, ct);

    /// <summary>Verifies the events from <paramref name="fromSequence"/>, and the stored leaves from <paramref name="leavesFrom"/>.</summary>
    public async Task<Result> VerifyAsync(string tenant, long fromSequence, long leavesFrom, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        await using var command = database.CreateCommand("""
            WITH touched AS (
                SELECT DISTINCT o.stream_id FROM sandbox.audit_event_owner o WHERE o.tenant = @tenant AND o.seq_id >= @from
            )
            SELECT t.stream_id, 0 AS kind, a.version, a.seq_id, a.type, NULL::bytea, a.headers ->> 'hash', a.headers ->> 'prevHash',
                   s.version, NULL::text, n.hash
            FROM touched t LEFT JOIN sandbox.mt_streams s ON s.id = t.stream_id
            CROSS JOIN LATERAL (SELECT x.version, x.seq_id, x.type, x.headers FROM sandbox.mt_events x
                                WHERE x.stream_id = t.stream_id AND x.seq_id < @from ORDER BY x.version DESC LIMIT 1) a
            LEFT JOIN sandbox.audit_tree_leaves l ON l.tenant = @tenant AND l.seq_id = a.seq_id
            LEFT JOIN sandbox.audit_tree_nodes n ON n.tenant = l.tenant AND n.level = 0 AND n.idx = l.leaf_index
            UNION ALL
            SELECT t.stream_id, 1, e.version, e.seq_id, e.type, convert_to(e.data::text, 'UTF8'), e.headers ->> 'hash', e.headers ->> 'prevHash',
                   s.version, e.headers ->> 'canon', NULL
            FROM touched t LEFT JOIN sandbox.mt_streams s ON s.id = t.stream_id
            JOIN sandbox.mt_events e ON e.stream_id = t.stream_id AND e.seq_id >= @from
            ORDER BY 1, 2, 3
            """);
        command.CommandTimeout = 0;
        command.Parameters.Add(new NpgsqlParameter("tenant", NpgsqlDbType.Text) { Value = tenant });
        command.Parameters.Add(new NpgsqlParameter("from", NpgsqlDbType.Bigint) { Value = fromSequence });

        var verifier = new ChainVerifier();
        long anchors = 0;
        await using (var reader = await command.ExecuteReaderAsync(ct))
            while (await reader.ReadAsync(ct))
            {
                var (stream, version, sequence) = (reader.GetGuid(0), reader.GetInt64(2), reader.GetInt64(3));
                var hash = reader.IsDBNull(6) ? null : reader.GetString(6);
                long? streamVersion = reader.IsDBNull(8) ? null : reader.GetInt64(8);
                if (reader.GetInt32(1) == 0)
                {
                    anchors++;
                    var committed = hash is not null && !reader.IsDBNull(10) && MerkleTree.LeafHash(MerkleTree.EventLeaf(sequence, stream, version, hash))
                        .AsSpan().SequenceEqual(reader.GetFieldValue<byte[]>(10));
                    verifier.ResumeAfter(stream, version, sequence, hash ?? "", streamVersion, committed);
                    continue;
                }
                verifier.Add(new StoredEvent(stream, version, sequence, reader.GetString(4), "", hash,
                    reader.IsDBNull(7) ? null : reader.GetString(7), streamVersion)
                { DataUtf8 = reader.GetFieldValue<byte[]>(5), Canon = reader.IsDBNull(9) ? null : reader.GetString(9) });
            }
        verifier.Complete();
        var breaks = verifier.Breaks.Concat(await NewLeafDifferencesAsync(tenant, Math.Min(leavesFrom, fromSequence), ct)).ToList();

        var elapsed = clock.Elapsed;
        var report = new VerificationReport(breaks.Count == 0, verifier.EventsChecked, verifier.StreamsChecked,
            verifier.BrokenStreams + breaks.Count - verifier.Breaks.Count,
            breaks.Count > 0 ? breaks[0] : null, breaks, (long)elapsed.TotalMilliseconds,
            elapsed.TotalSeconds > 0 ? (long)(verifier.EventsChecked / elapsed.TotalSeconds) : 0);
        return new Result(report, fromSequence, anchors);
    }

    /// <summary>The stored tree's leaves for events at or after <paramref name="fromSequence"/> must be what those events give.</summary>
    private async Task<List<ChainBreak>> NewLeafDifferencesAsync(string tenant, long fromSequence, CancellationToken ct)
    {
        await using var command = database.CreateCommand("""
            SELECT l.leaf_index, l.seq_id, n.hash, e.stream_id, e.version, e.hash
            FROM sandbox.audit_tree_leaves l
            LEFT JOIN LATERAL (SELECT x.hash FROM sandbox.audit_tree_nodes x
                               WHERE x.tenant = @tenant AND x.level = 0 AND x.idx = l.leaf_index LIMIT 1) n ON true
            LEFT JOIN LATERAL (SELECT x.stream_id, x.version, x.headers ->> 'hash' AS hash FROM sandbox.mt_events x
                               WHERE x.seq_id = l.seq_id LIMIT 1) e ON true
            WHERE l.tenant = @tenant AND l.seq_id >= @from ORDER BY l.leaf_index
            """);
        command.Parameters.Add(new NpgsqlParameter("tenant", NpgsqlDbType.Text) { Value = tenant });
        command.Parameters.Add(new NpgsqlParameter("from", NpgsqlDbType.Bigint) { Value = fromSequence });
        var differences = new List<ChainBreak>();
        await using var reader = await command.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct) && differences.Count < 100)
        {
            var (index, sequence) = (reader.GetInt64(0), reader.GetInt64(1));
            if (reader.IsDBNull(3) || reader.IsDBNull(2))
            {
                differences.Add(new ChainBreak(Guid.Empty, 0, sequence, $"stored tree leaf {index} is event {sequence}, which is no longer in the record"));
                continue;
            }
            var (stream, version) = (reader.GetGuid(3), reader.GetInt64(4));
            var leaf = MerkleTree.LeafHash(MerkleTree.EventLeaf(sequence, stream, version, reader.IsDBNull(5) ? null : reader.GetString(5)));
            if (!leaf.AsSpan().SequenceEqual(reader.GetFieldValue<byte[]>(2)))
                differences.Add(new ChainBreak(stream, version, sequence, $"stored tree leaf {index} does not hash to what event {sequence} gives"));
        }
        return differences;
    }
}
