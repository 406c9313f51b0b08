using System.Diagnostics;
using System.Net;
using Sandbox.Audited.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Sandbox.Audited.Tests.Cluster;

/// <summary>
/// Fault injection from outside (h/chaos): an api node stopped gracefully (SIGTERM) while runs it accepted with
/// wait:false still wait in the queue, with both executors alive. Those runs were answered 202 ("pending"): the
/// queue row is durable and any executor may claim it, so a graceful restart of the api node must not turn them into
/// refusals. Found by hand on a four-node cluster: 202 then run_completed{status: refused, "the service is shutting
/// down"} 10 ms-1 s after SIGTERM, also for a request that reached the node 170 ms after SIGTERM (202, not 503).
/// </summary>
[Collection(ProcessClusterCollection.Name)]
public sealed class DrainingApiNodeTests(ProcessCluster cluster, ITestOutputHelper output) : IAsyncLifetime
{
    public Task InitializeAsync() => cluster.EnsureAllUpAsync();

    public Task DisposeAsync() => cluster.EnsureAllUpAsync();

    [Fact]
    public async Task RunsAnApiNodeAcceptedWithoutWaitingStillRunWhenItStopsGracefully()
    {
        const string tenant = "tenant-drain-accepted";
        var victim = cluster.Api(0);
        using var runner = victim.Runner("dora", tenant);

        // Eight runs of 4 s: six hold the tenant's cluster-wide ceiling (6), two wait in the queue for a slot that frees
        // well within Admission:MaxQueueWaitMs (10 s).
        var runs = new List<Guid>();
        for (var i = 0; i < 8; i++)
        {
            var (accepted, body) = await runner.RunAsync(new { language = "shell", code = $"sleep 4; echo r{i}", wait = false });
            Assert.Equal(HttpStatusCode.Accepted, accepted.StatusCode);
            runs.Add(Guid.Parse(body.Str("runId")));
        }
        await Eventually.WaitUntilAsync(async () => await cluster.Database.ScalarAsync<long>(
                "SELECT count(*) FROM sandbox.run_queue WHERE run_id = ANY($1) AND state = 'claimed'", runs.ToArray()) == 6,
            () => "the tenant's six runs were not claimed", TimeSpan.FromSeconds(30), pollMs: 100);

        // SIGTERM (StopAsync sends it before its first await), then one more request that may reach the draining node.
        var stopping = victim.StopAsync();
        await Task.Delay(100);
        Guid? late = null;
        try
        {
            var (answer, body) = await runner.RunAsync(new { language = "shell", code = "echo late", wait = false });
            output.WriteLine($"request 100 ms after SIGTERM: {(int)answer.StatusCode} {body.ToJsonString()[..Math.Min(160, body.ToJsonString().Length)]}");
            if (answer.StatusCode == HttpStatusCode.Accepted)
                late = Guid.Parse(body.Str("runId"));
            else
                Assert.True(answer.StatusCode == HttpStatusCode.ServiceUnavailable && answer.Headers.RetryAfter is not null,
                    $"a draining node answered {(int)answer.StatusCode}");
        }
        catch (HttpRequestException e)
        {
            output.WriteLine("request 100 ms after SIGTERM: not connected (" + e.Message + ")");
        }
        await stopping;

        var all = late is { } l ? [.. runs, l] : runs;
        await Eventually.WaitUntilAsync(async () => await cluster.Database.ScalarAsync<long>(
                "SELECT count(*) FROM sandbox.mt_events WHERE stream_id = ANY($1) AND type IN ('run_completed', 'run_failed', 'run_abandoned')",
                all.ToArray()) == all.Count,
            () => "not every run ended", TimeSpan.FromSeconds(60), pollMs: 250);
        var refused = new List<string>();
        await using (var data = Npgsql.NpgsqlDataSource.Create(cluster.Database.AdminConnection))
        await using (var command = data.CreateCommand(
            "SELECT stream_id, coalesce(data ->> 'status', type), coalesce(data ->> 'reason', '') FROM sandbox.mt_events WHERE stream_id = ANY($1) AND type IN ('run_completed', 'run_failed', 'run_abandoned')"))
        {
            command.Parameters.AddWithValue(all.ToArray());
            await using var reader = await command.ExecuteReaderAsync();
            while (await reader.ReadAsync())
                if (reader.GetString(1) != "succeeded")
                    refused.Add($"{reader.GetGuid(0)}{(reader.GetGuid(0) == late ? " (sent after SIGTERM, answered 202)" : "")}: {reader.GetString(1)} ({reader.GetString(2)})");
        }
        Assert.True(refused.Count == 0, "runs answered 202 that never ran although both executors were up:\n" + string.Join("\n", refused));
    }
    /// <summary>
    /// Found by hand: a client of another api node that joins after the program's first output sees nothing live for the
    /// rest of the run: the chunk relayed before it joined leaves a gap, and every live chunk after that gap waits for the
    /// recorded output (documented in the README, "Live output across nodes", but short of the issue's "sees the output as
    /// the executor produces it"). On a four-node cluster a curl opened right after the 202 already came too late for a
    /// program printing at once (4 of 4 runs: tick1 at 0.1 s, tick2 at 1 s, both delivered with the end at 3 s); here the
    /// client joins 0.5 s in, after tick1, so the race is decided the same way every time.
    /// </summary>
    [Fact]
    public async Task OutputAfterTheFollowerJoinedCrossesNodesLiveEvenIfTheProgramPrintedBefore()
    {
        const string tenant = "tenant-cross-stream-early";
        using var viaA = cluster.Api(0).Runner("dora", tenant);
        using var viaB = cluster.Api(1).Runner("dora", tenant);
        var (accepted, body) = await viaA.RunAsync(new { language = "shell", code = "echo tick1; sleep 1; echo tick2; sleep 3; echo tick3", wait = false });
        Assert.Equal(HttpStatusCode.Accepted, accepted.StatusCode);

        var clock = Stopwatch.StartNew();
        await Task.Delay(500);
        using var response = await viaB.GetAsync($"/v1/runs/{body.Str("runId")}/stream", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var received = await ServerSentEvents.ReadUntilEndAsync(response, clock);
        output.WriteLine(string.Join("\n", received.Select(r => $"{r.At.TotalSeconds,6:F2} s {r.Event} {r.Data[..Math.Min(60, r.Data.Length)]}")));
        var tick2 = received.FirstOrDefault(r => r.Event == "stdout" && r.Data.Contains("tick2", StringComparison.Ordinal));
        var end = received.Single(r => r.Event == "end");
        Assert.NotNull(tick2.Event);
        // tick2 is printed 3 s before the end, long after B followed the run: live, it arrives well before the end.
        Assert.True(end.At - tick2.At > TimeSpan.FromSeconds(1.5),
            $"tick2 arrived at {tick2.At.TotalSeconds:F2} s, the end at {end.At.TotalSeconds:F2} s: output produced after the follower joined did not cross live");
    }
}
