using Npgsql;
using Sandbox.Audited.Domain.Evidence;

namespace Sandbox.Audited.Audit.Evidence;

/// <summary>What a release did: the verdict, the facts it was made on, and when the release took effect (null: refused or nothing held).</summary>
public sealed record NodeHoldReleaseResult(NodeReleaseVerdict Verdict, NodeHoldFacts Facts, DateTimeOffset? ReleasedAt);

/// <summary>
/// `sbx evidence release-holds NODE`: records in sandbox.evidence_node_releases (migration 0101) that a node never comes
/// back, so that the evidence sweep releases its holds and removes, after its grace, the content no event names. One
/// transaction: the node's row is locked first (its registration and heartbeat wait for the commit), the facts are read,
/// the Domain decides (NodeHoldRelease), and the release is written only when allowed. Nothing else is changed here.
/// </summary>
public static class NodeHoldReleases
{
    public static async Task<NodeHoldReleaseResult> ReleaseAsync(NpgsqlDataSource database, string node, TimeSpan abandonGrace, string by, CancellationToken ct)
    {
        var s = MartenSetup.Schema;
        await using var connection = await database.OpenConnectionAsync(ct);
        await using var transaction = await connection.BeginTransactionAsync(ct);

        // now() is the transaction's start: a heartbeat that commits while this waits for the lock reads as later than now, so live.
        DateTimeOffset now;
        await using (var clock = new NpgsqlCommand("SELECT now()", connection, transaction))
        await using (var reader = await clock.ExecuteReaderAsync(ct))
        {
            await reader.ReadAsync(ct);
            now = reader.GetFieldValue<DateTimeOffset>(0);
        }
        DateTimeOffset? started = null, heartbeat = null;
        await using (var registration = new NpgsqlCommand($"SELECT started_at, heartbeat_at FROM {s}.nodes WHERE node_id = $1 FOR UPDATE", connection, transaction))
        {
            registration.Parameters.AddWithValue(node);
            await using var reader = await registration.ExecuteReaderAsync(ct);
            if (await reader.ReadAsync(ct))
                (started, heartbeat) = (reader.GetFieldValue<DateTimeOffset>(0), reader.GetFieldValue<DateTimeOffset>(1));
        }

        var claimed = new List<Guid>();
        await using (var runs = new NpgsqlCommand($"SELECT run_id FROM {s}.run_queue WHERE state = 'claimed' AND node_id = $1 ORDER BY claimed_at", connection, transaction))
        {
            runs.Parameters.AddWithValue(node);
            await using var reader = await runs.ExecuteReaderAsync(ct);
            while (await reader.ReadAsync(ct))
                claimed.Add(reader.GetGuid(0));
        }

        var holds = new SortedDictionary<string, int>(StringComparer.Ordinal);
        await using (var count = new NpgsqlCommand($"SELECT tenant, count(*) FROM {s}.evidence_holds WHERE node = $1 GROUP BY tenant", connection, transaction))
        {
            count.Parameters.AddWithValue(node);
            await using var reader = await count.ExecuteReaderAsync(ct);
            while (await reader.ReadAsync(ct))
                holds[reader.GetString(0)] = (int)reader.GetInt64(1);
        }

        var facts = new NodeHoldFacts(node, now, started, heartbeat, claimed, holds);
        var verdict = NodeHoldRelease.Decide(facts, abandonGrace);
        if (verdict is not NodeReleaseVerdict.Release)
        {
            await transaction.RollbackAsync(ct);
            return new NodeHoldReleaseResult(verdict, facts, null);
        }

        // Again later (the node came back and went for good once more): the new time covers the holds it renewed meanwhile.
        await using (var release = new NpgsqlCommand(
            $"INSERT INTO {s}.evidence_node_releases (node, released_at, released_by) VALUES ($1, now(), $2) "
            + "ON CONFLICT (node) DO UPDATE SET released_at = EXCLUDED.released_at, released_by = EXCLUDED.released_by", connection, transaction))
        {
            release.Parameters.AddWithValue(node);
            release.Parameters.AddWithValue(by);
            await release.ExecuteNonQueryAsync(ct);
        }
        await transaction.CommitAsync(ct);
        return new NodeHoldReleaseResult(verdict, facts, now);
    }
}
