using System.Net;
using Npgsql;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Cluster;

/// <summary>
/// An api node whose PostgreSQL goes away (through a proxy the test cuts; the executor node and the database stay up) while
/// it waits for a run an executor claimed: the client always learns the run id, and the run is recorded once.
/// </summary>
[Collection(ClusterCollection.Name)]
public sealed class StoreAwayTests(ClusterFixture cluster)
{
    [Fact]
    public async Task ApiNodeWhoseStoreIsBrieflyAwayKeepsWaitingAndAnswersTheRun()
    {
        await using var proxy = Proxy();
        await using var api = ProxiedApi(proxy, out var node);
        var client = cluster.Client(api, "ada", "tenant-away");

        var posting = client.RunAsync(new { language = "python", code = "import time\ntime.sleep(3)\nprint('done')" });
        var runId = await ClaimedRunAsync(node);
        await proxy.StopAsync();
        await Task.Delay(TimeSpan.FromSeconds(2)); // the api node's polls fail meanwhile
        proxy.Start();
        var (response, body) = await posting;

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(runId.ToString(), body.Str("runId"));
        Assert.Equal("succeeded", body.Str("status"));
        Assert.Equal("done\n", body.Str("stdout.content"));
        Assert.Equal(1L, await TerminalsAsync(runId));
    }

    [Fact]
    public async Task ApiNodeWhoseStoreStaysAwayAnswers202WithTheRunIdAndTheRunStillExecutes()
    {
        await using var proxy = Proxy();
        await using var api = ProxiedApi(proxy, out var node);
        var client = cluster.Client(api, "ada", "tenant-away");

        // Wait budget: queue wait 1.5 s + the run's 2 s time limit + one 2 s lease.
        var posting = client.RunAsync(new { language = "python", code = "import time\ntime.sleep(1)\nprint('done')", limits = new { timeoutMs = 2000 } });
        var runId = await ClaimedRunAsync(node);
        await proxy.StopAsync();
        var (response, body) = await posting.WaitAsync(TimeSpan.FromSeconds(30));
        proxy.Start();

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Equal($"/v1/runs/{runId}", response.Headers.Location?.ToString());
        Assert.Equal(runId.ToString(), body.Str("runId"));
        Assert.Contains(body.Str("status"), new[] { "pending", "running" }); // whether this node saw the claim before the cut
        Assert.Null(body["completedAt"]);
        Assert.Contains("audit store was unavailable", body.Str("reason"), StringComparison.Ordinal);
        await Eventually.WaitUntilAsync(async () => await TerminalsAsync(runId) == 1, () => "the run never ended", TimeSpan.FromSeconds(30));
        var (found, run) = await client.GetJsonAsync($"/v1/runs/{runId}");
        Assert.Equal(HttpStatusCode.OK, found.StatusCode);
        Assert.Equal("succeeded", run.Str("status"));
        Assert.Equal("done\n", run.Str("stdout.content"));
        Assert.Equal(1L, await TerminalsAsync(runId));
    }

    private static SocketProxy Proxy()
    {
        var upstream = new NpgsqlConnectionStringBuilder(TestEnvironment.AdminConnection);
        var proxy = SocketProxy.Tcp(new IPEndPoint(IPAddress.Parse(upstream.Host == "localhost" ? "127.0.0.1" : upstream.Host!), upstream.Port));
        proxy.Start();
        return proxy;
    }

    private Microsoft.AspNetCore.Mvc.Testing.WebApplicationFactory<Program> ProxiedApi(SocketProxy proxy, out string node)
    {
        node = "api-away-" + Guid.NewGuid().ToString("N")[..6];
        var connection = new NpgsqlConnectionStringBuilder(cluster.Database.AppConnection) { Host = "127.0.0.1", Port = proxy.Port, Timeout = 2 }.ConnectionString;
        return cluster.StartNode(node, "api", connection, new() { ["Admission:MaxQueueWaitMs"] = ClusterFixture.QueueWaitMs.ToString() });
    }

    /// <summary>The run the node just recorded, once the executor node claimed it.</summary>
    private async Task<Guid> ClaimedRunAsync(string node)
    {
        Guid? runId = null;
        await Eventually.WaitUntilAsync(async () =>
            (runId = await cluster.Database.ScalarAsync<Guid?>("SELECT run_id FROM sandbox.run_queue WHERE requested_by = $1 AND state = 'claimed'", node)) is not null,
            () => "no run of the proxied api node was claimed", TimeSpan.FromSeconds(20), pollMs: 50);
        return runId!.Value;
    }

    private async Task<long> TerminalsAsync(Guid runId) =>
        await cluster.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.mt_events WHERE stream_id = $1 AND type IN ('run_completed', 'run_failed', 'run_abandoned')", runId);
}
