using Npgsql;

namespace Sandbox.Audited.Audit.Evidence;

/// <summary>Which run a content is stored for, on which node: until the run can no longer name it, the evidence sweep leaves it.</summary>
public sealed record ContentHold(Guid RunId, string Node);

/// <summary>
/// sandbox.evidence_holds (migration 0100): one row per content a writer streamed into the store before the commit that
/// names it. Written with the content, renewed by the node's heartbeat while the node still holds the run (in flight or in
/// its journal), deleted by the evidence sweep once released.
/// </summary>
public static class EvidenceHolds
{
    /// <summary>A node renews a hold at most this often: enough for the sweep (whose grace is far longer), little churn.</summary>
    public static readonly TimeSpan RenewEvery = TimeSpan.FromSeconds(30);

    private static string Holds => $"{MartenSetup.Schema}.evidence_holds";

    public static async Task AddAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, string tenant, string sha256, ContentHold hold, CancellationToken ct)
    {
        await using var insert = new NpgsqlCommand(
            $"INSERT INTO {Holds} (tenant, sha256, run_id, node) VALUES ($1, $2, $3, $4) "
            + "ON CONFLICT (tenant, sha256, run_id) DO UPDATE SET held_at = now(), node = EXCLUDED.node", connection, transaction);
        insert.Parameters.AddWithValue(tenant);
        insert.Parameters.AddWithValue(sha256);
        insert.Parameters.AddWithValue(hold.RunId);
        insert.Parameters.AddWithValue(hold.Node);
        await insert.ExecuteNonQueryAsync(ct);
    }

    /// <summary>The statement a node's heartbeat adds to its batch: renews the holds of the runs it still holds ($1 node, $2 runs).</summary>
    public static NpgsqlBatchCommand Renewal(string node, IReadOnlyCollection<Guid> runs) => new(
        $"UPDATE {Holds} SET held_at = now() WHERE node = $1 AND run_id = ANY($2) AND held_at < now() - make_interval(secs => $3)")
    {
        Parameters =
        {
            new() { Value = node },
            new() { Value = runs.ToArray() },
            new() { Value = RenewEvery.TotalSeconds },
        },
    };
}
