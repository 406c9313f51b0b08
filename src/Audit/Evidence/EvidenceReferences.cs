using Npgsql;
using NpgsqlTypes;

namespace Sandbox.Audited.Audit.Evidence;

/// <summary>One digest a recorded event says is in the evidence store: which run, what it is (code, stdin, file:NAME, stdout…).</summary>
public sealed record EvidenceReference(Guid RunId, string Role, string Sha256, long Bytes);

/// <summary>
/// The digests a tenant's events reference in the evidence store, read from the events as stored (raw SQL): inputs of
/// runs recorded with InputsStored, output streams marked stored, and artifacts. Runs from before the store are skipped:
/// their content is inside their events, covered by the hash chain.
/// </summary>
public static class EvidenceReferences
{
    private const string Sql = """
        WITH runs AS (
            SELECT stream_id FROM sandbox.mt_events
            WHERE type = 'run_requested' AND data -> 'caller' ->> 'tenant' = @tenant AND (@run::uuid IS NULL OR stream_id = @run)
        )
        SELECT e.stream_id, r.role, r.sha256, r.bytes
        FROM sandbox.mt_events e JOIN runs USING (stream_id)
        CROSS JOIN LATERAL (
            SELECT 'code' AS role, e.data ->> 'codeSha256' AS sha256, (e.data ->> 'codeBytes')::bigint AS bytes
              WHERE e.type = 'run_requested' AND (e.data ->> 'inputsStored')::boolean
            UNION ALL SELECT 'stdin', e.data ->> 'stdinSha256', (e.data ->> 'stdinBytes')::bigint
              WHERE e.type = 'run_requested' AND (e.data ->> 'inputsStored')::boolean
            UNION ALL SELECT 'file:' || (f ->> 'name'), f ->> 'sha256', (f ->> 'bytes')::bigint
              FROM jsonb_array_elements(CASE WHEN e.type = 'run_requested' AND (e.data ->> 'inputsStored')::boolean
                                             THEN e.data -> 'files' ELSE '[]'::jsonb END) f
            UNION ALL SELECT 'stdout', e.data -> 'stdout' ->> 'sha256', (e.data -> 'stdout' ->> 'bytes')::bigint
              WHERE e.type = 'output_recorded' AND (e.data -> 'stdout' ->> 'stored')::boolean
            UNION ALL SELECT 'stderr', e.data -> 'stderr' ->> 'sha256', (e.data -> 'stderr' ->> 'bytes')::bigint
              WHERE e.type = 'output_recorded' AND (e.data -> 'stderr' ->> 'stored')::boolean
            UNION ALL SELECT 'artifact:' || (e.data ->> 'name'), e.data ->> 'sha256', (e.data ->> 'bytes')::bigint
              WHERE e.type = 'artifact_recorded' AND e.data ->> 'status' = 'stored'
        ) r
        ORDER BY e.seq_id, r.role
        """;

    public static async Task<IReadOnlyList<EvidenceReference>> OfAsync(NpgsqlDataSource database, string tenant, Guid? runId, CancellationToken ct)
    {
        await using var command = database.CreateCommand(Sql);
        command.CommandTimeout = 0;
        command.Parameters.Add(new NpgsqlParameter("tenant", NpgsqlDbType.Text) { Value = tenant });
        command.Parameters.Add(new NpgsqlParameter("run", NpgsqlDbType.Uuid) { Value = (object?)runId ?? DBNull.Value });
        var references = new List<EvidenceReference>();
        await using var reader = await command.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
            references.Add(new EvidenceReference(reader.GetGuid(0), reader.GetString(1), reader.GetString(2), reader.IsDBNull(3) ? -1 : reader.GetInt64(3)));
        return references;
    }
}

/// <summary>One referenced content as found: intact, changed (no longer hashes to its digest), erased, or missing.</summary>
public sealed record EvidenceCheck(Guid RunId, string Role, string Sha256, string State);

public sealed record EvidenceReport(bool Verified, int Checked, int Intact, int Erased, int Changed, int Missing, IReadOnlyList<EvidenceCheck> Problems, IReadOnlyList<EvidenceCheck> ErasedItems);

/// <summary>
/// Rehashes every stored content a tenant's events reference. Changed or missing content fails verification; erased
/// content does not (an erasure is recorded as its own event), it is reported as erased.
/// </summary>
public sealed class EvidenceVerification(NpgsqlDataSource database, EvidenceStore store)
{
    public async Task<EvidenceReport> VerifyAsync(string tenant, Guid? runId, CancellationToken ct)
    {
        var references = await EvidenceReferences.OfAsync(database, tenant, runId, ct);
        var states = new Dictionary<string, ContentCheck>(StringComparer.Ordinal);
        var checks = new List<EvidenceCheck>();
        foreach (var reference in references)
        {
            if (!states.TryGetValue(reference.Sha256, out var state))
                states[reference.Sha256] = state = await store.CheckAsync(tenant, reference.Sha256, ct);
            checks.Add(new EvidenceCheck(reference.RunId, reference.Role, reference.Sha256, Name(state)));
        }
        int Count(ContentCheck c) => checks.Count(x => x.State == Name(c));
        var problems = checks.Where(c => c.State is "changed" or "missing").ToList();
        return new EvidenceReport(problems.Count == 0, checks.Count, Count(ContentCheck.Intact), Count(ContentCheck.Erased),
            Count(ContentCheck.Changed), Count(ContentCheck.Missing), problems, checks.Where(c => c.State == "erased").ToList());
    }

    private static string Name(ContentCheck check) => check switch
    {
        ContentCheck.Intact => "intact",
        ContentCheck.Changed => "changed",
        ContentCheck.Erased => "erased",
        _ => "missing",
    };
}
