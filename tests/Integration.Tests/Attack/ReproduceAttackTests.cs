using System.Net;
using Sandbox.Audited.Tests.Audit;
using Sandbox.Audited.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Sandbox.Audited.Tests.Attack;

/// <summary>
/// Attack on POST /v1/runs/{id}/reproduce while PostgreSQL goes away: the reproduction is a new run that touched a sandbox,
/// so, as for POST /v1/runs, its outcome must be kept (journal) and the client must learn the new run's id, or a retry runs
/// the program again.
/// </summary>
[Collection(StoreRefusalCodeCollection.Name)]
public sealed class ReproduceAttackTests(StoreRefusalCodeFixture service, ITestOutputHelper output)
{
    [Fact]
    public async Task AReproductionWhoseStoreGoesAwayMidRunAnswersWithItsRunIdAndEndsOnce()
    {
        var tenant = AuditTestClient.NewTenant("repro-away");
        using var runner = service.Runner("alice", tenant);
        runner.Timeout = TimeSpan.FromMinutes(3);
        var (first, original) = await runner.RunAsync(new { language = "shell", code = "sleep 3; echo same" });
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        var originalId = original.Str("runId");

        var reproducing = runner.PostAsync($"/v1/runs/{originalId}/reproduce", null);
        Guid? reproduction = null;
        await Eventually.WaitUntilAsync(async () => (reproduction = await service.Database.ScalarAsync<Guid?>("""
            SELECT r.stream_id FROM sandbox.mt_events r WHERE r.type = 'run_requested' AND r.data ->> 'reproducesRunId' = $1
              AND EXISTS (SELECT 1 FROM sandbox.mt_events s WHERE s.stream_id = r.stream_id AND s.type = 'sandbox_started')
            """, originalId)) is not null, () => "the reproduction never started its sandbox", TimeSpan.FromSeconds(30), pollMs: 20);

        HttpResponseMessage answer;
        string body;
        var away = await service.StoreAwayAsync();
        try
        {
            answer = await reproducing;
            body = await answer.Content.ReadAsStringAsync();
        }
        finally
        {
            await away.DisposeAsync();
        }
        output.WriteLine($"reproduce while the store was away: {(int)answer.StatusCode} {body}");

        // The new run's id, so that the client does not reproduce (run) it again; never a bare 5xx.
        Assert.Contains(reproduction!.Value.ToString(), body, StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.Accepted, answer.StatusCode);
        Assert.Equal($"/v1/runs/{reproduction.Value}", answer.Headers.Location?.ToString());
        Assert.Equal(TimeSpan.FromSeconds(5), answer.Headers.RetryAfter?.Delta);

        string terminals = "";
        await Eventually.WaitUntilAsync(async () => (terminals = await service.Database.ScalarAsync<string>(
                "SELECT coalesce(string_agg(type, ',' ORDER BY seq_id), '') FROM sandbox.mt_events WHERE stream_id = $1 AND type IN ('run_completed', 'run_failed', 'run_abandoned')",
                reproduction.Value) ?? "").Length > 0,
            () => "the reproduction never ended in the record", TimeSpan.FromSeconds(60), pollMs: 250);
        await Task.Delay(1000);
        Assert.Equal("run_completed", await service.Database.ScalarAsync<string>(
            "SELECT string_agg(type, ',') FROM sandbox.mt_events WHERE stream_id = $1 AND type IN ('run_completed', 'run_failed', 'run_abandoned')", reproduction.Value));
        var (_, run) = await runner.GetJsonAsync($"/v1/runs/{reproduction.Value}");
        Assert.Equal("succeeded", run.Str("status"));
        Assert.Equal("same\n", run.Str("stdout.content"));
    }
}
