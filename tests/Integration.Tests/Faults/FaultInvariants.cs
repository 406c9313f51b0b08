using System.Diagnostics;
using Npgsql;
using Sandbox.Audited.Audit.Trail;
using Sandbox.Audited.Tests.Executor;
using Sandbox.Audited.Tests.Infrastructure;
using ContainerSpec = Sandbox.Audited.Executor.Sandboxes.ContainerSpec;

namespace Sandbox.Audited.Tests.Faults;

/// <summary>
/// What must hold after any fault, read from the database and the engine themselves (not from the service's answers):
/// one terminal event per run, the write-ahead events first in every run that touched a sandbox, every container the
/// engine created for a run named in its stream, every chain verified, nothing left in the engine.
/// </summary>
public static class FaultInvariants
{
    public static async Task<List<string>> CheckAsync(TestDatabase database, string nodeId, DateTimeOffset since, IEnumerable<string> tenants)
    {
        var violations = await CheckRecordAsync(database, [nodeId], since, tenants);

        // Nothing left behind in the engine.
        var left = await Containers.OfNodeAsync(nodeId);
        if (left.Count > 0)
            violations.Add("left in the engine: " + Containers.Describe(left));
        return violations;
    }

    /// <summary>The invariants of the record alone, over the containers of several nodes (a cluster whose nodes still run).</summary>
    public static async Task<List<string>> CheckRecordAsync(TestDatabase database, IEnumerable<string> nodeIds, DateTimeOffset since, IEnumerable<string> tenants)
    {
        var violations = new List<string>();
        await using var data = NpgsqlDataSource.Create(database.AdminConnection);

        // Exactly one terminal event in every run stream.
        await foreach (var (stream, count) in RowsAsync<Guid, long>(data, """
            SELECT s.id, (SELECT count(*) FROM sandbox.mt_events t WHERE t.stream_id = s.id AND t.type IN ('run_completed', 'run_failed', 'run_abandoned'))
            FROM sandbox.mt_streams s
            WHERE EXISTS (SELECT 1 FROM sandbox.mt_events f WHERE f.stream_id = s.id AND f.type IN ('run_requested', 'request_rejected'))
            """))
            if (count != 1)
                violations.Add($"run {stream} has {count} terminal events");

        // No run touched a sandbox without its write-ahead events (request, then decision) before it.
        await foreach (var (stream, first) in RowsAsync<Guid, string>(data, """
            SELECT c.stream_id, coalesce((SELECT string_agg(e.type, ',' ORDER BY e.version) FROM sandbox.mt_events e
                                          WHERE e.stream_id = c.stream_id AND e.version <= 2), '')
            FROM sandbox.mt_events c WHERE c.type = 'sandbox_created'
            """))
            if (first != "run_requested,policy_evaluated")
                violations.Add($"run {stream} touched a sandbox after only [{first}]");

        // Every container the engine created for a run (labelled with its id) is named in that run's stream: created, or at
        // least removed (the engine created it but the connection broke before the service learnt its id).
        var recorded = new HashSet<string>();
        await foreach (var (stream, container) in RowsAsync<Guid, string>(data,
            "SELECT stream_id, data ->> 'containerId' FROM sandbox.mt_events WHERE type IN ('sandbox_created', 'sandbox_removed')"))
            recorded.Add($"{stream:D} {container}");
        foreach (var (container, run) in (await Task.WhenAll(nodeIds.Select(n => CreatedAsync(n, since)))).SelectMany(c => c))
            if (Guid.TryParse(run, out var runId) && !recorded.Contains($"{runId:D} {container}"))
                violations.Add($"container {container[..12]} created for run {run} is not in its stream");

        // Every container recorded on a run is recorded removed (after the engine confirmed it), once.
        await foreach (var (stream, container) in RowsAsync<Guid, string>(data, """
            SELECT c.stream_id, c.data ->> 'containerId' FROM sandbox.mt_events c
            WHERE c.type = 'sandbox_created'
              AND (SELECT count(*) FROM sandbox.mt_events r WHERE r.stream_id = c.stream_id AND r.type = 'sandbox_removed'
                   AND r.data ->> 'containerId' = c.data ->> 'containerId') <> 1
            """))
            violations.Add($"run {stream}: container {container[..12]} is not recorded removed exactly once");

        // Every chain verifies.
        var verification = new ChainVerification(data);
        foreach (var tenant in tenants)
        {
            var report = await verification.VerifyAsync(tenant, new VerifyScope(), CancellationToken.None);
            if (!report.Verified)
                violations.Add($"tenant {tenant}: {report.BrokenStreams} broken chains, first {report.FirstBroken}");
        }
        return violations;
    }

    /// <summary>Requests by status: what the clients saw.</summary>
    public static string Figures(IEnumerable<(int Http, string Status)> answers) =>
        string.Join(", ", answers.GroupBy(a => $"{a.Http} {a.Status}".Trim()).OrderBy(g => g.Key).Select(g => $"{g.Key}: {g.Count()}"));

    /// <summary>The containers the engine created with this node's label since then, from its event log.</summary>
    private static async Task<List<(string Container, string Run)>> CreatedAsync(string nodeId, DateTimeOffset since)
    {
        var info = new ProcessStartInfo("docker") { RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var arg in new[]
                 {
                     "events", "--since", since.ToUnixTimeSeconds().ToString(System.Globalization.CultureInfo.InvariantCulture),
                     "--until", DateTimeOffset.UtcNow.AddSeconds(1).ToUnixTimeSeconds().ToString(System.Globalization.CultureInfo.InvariantCulture),
                     "--filter", "type=container", "--filter", "event=create", "--filter", $"label={ContainerSpec.NodeLabel}={nodeId}",
                     "--format", $"{{{{.Actor.ID}}}} {{{{index .Actor.Attributes \"{ContainerSpec.RunLabel}\"}}}}",
                 })
            info.ArgumentList.Add(arg);
        using var process = Process.Start(info)!;
        var text = await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();
        return text.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => line.Split(' ', 2)).Select(p => (p[0], p.Length > 1 ? p[1] : "")).ToList();
    }

    private static async IAsyncEnumerable<(TA, TB)> RowsAsync<TA, TB>(NpgsqlDataSource data, string sql)
    {
        await using var command = data.CreateCommand(sql);
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
            yield return (reader.GetFieldValue<TA>(0), reader.GetFieldValue<TB>(1));
    }
}
