using System.Net;
using Sandbox.Audited.Tests.Executor;
using Sandbox.Audited.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Sandbox.Audited.Tests.Cluster;

/// <summary>
/// What a client sees of an api node that stops gracefully (SIGTERM) while it still listens for Shutdown:DrainSeconds
/// (default 1 s): a new run is refused 503 with Retry-After before anything of it is recorded, /readyz is 503, and a
/// client still waiting for a run the node recorded gets the run's id (202) instead of a refusal; the run stays queued,
/// also through the node's restart, and any executor runs it. And a process given the node id of a live one exits with its
/// documented code, not an unhandled exception.
/// </summary>
[Collection(ProcessClusterCollection.Name)]
public sealed class DrainWindowTests(ProcessCluster cluster, ITestOutputHelper output) : IAsyncLifetime
{
    public Task InitializeAsync() => cluster.EnsureAllUpAsync();

    public Task DisposeAsync() => cluster.EnsureAllUpAsync();

    [Fact]
    public async Task ADrainingApiNodeAnswersNewRunsWith503BeforeRecordingThemAndGivesAWaitingClientItsRun()
    {
        const string tenant = "tenant-drain-window";
        var victim = cluster.Api(1);
        using var runner = victim.Runner("drew", tenant);

        // Six runs of 28 s hold the tenant's cluster-wide ceiling (6): the waiting request's run stays queued, through the
        // node's stop and (on a machine that is not too busy) its restart.
        for (var i = 0; i < 6; i++)
            Assert.Equal(HttpStatusCode.Accepted, (await runner.RunAsync(
                new { language = "shell", code = $"sleep 28; echo r{i}", wait = false, limits = new { timeoutMs = 30000 } })).Response.StatusCode);
        await Eventually.WaitUntilAsync(async () => await ClaimedAsync(tenant) == 6, () => "the tenant's six runs were not claimed", TimeSpan.FromSeconds(30), pollMs: 100);
        var waiting = runner.RunAsync(new { language = "shell", code = "echo waited" });
        await Eventually.WaitUntilAsync(async () => await cluster.Database.ScalarAsync<long>(
                "SELECT count(*) FROM sandbox.run_queue WHERE tenant = $1 AND state = 'queued'", tenant) == 1,
            () => "the waiting run was not queued", TimeSpan.FromSeconds(30), pollMs: 50);
        var requested = await RequestedAsync(tenant);

        var stopping = victim.StopAsync();
        HttpResponseMessage refused;
        System.Text.Json.Nodes.JsonNode problem;
        try
        {
            await Eventually.WaitUntilAsync(async () => await ReadyzAsync(victim) == HttpStatusCode.ServiceUnavailable,
                () => "/readyz did not turn 503 after SIGTERM", TimeSpan.FromSeconds(10), pollMs: 20);
            // Within the drain window: refused cleanly.
            (refused, problem) = await runner.RunAsync(new { language = "shell", code = "echo late" });
        }
        finally
        {
            await stopping; // the next test's set-up restarts the node only once it has exited
        }
        output.WriteLine($"new run while draining: {(int)refused.StatusCode} {problem.ToJsonString()}");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        Assert.Equal("application/problem+json", refused.Content.Headers.ContentType?.MediaType);
        Assert.Equal(TimeSpan.FromSeconds(5), refused.Headers.RetryAfter?.Delta);
        Assert.Equal("/problems/sandbox-unavailable", problem.Str("type"));
        Assert.Contains("nothing was recorded", problem.Str("detail"), StringComparison.Ordinal);

        // The client that waited for a still-queued run: its id, 202, and why; not a refusal.
        var (answer, body) = await waiting;
        output.WriteLine($"waiting client: {(int)answer.StatusCode} {body.ToJsonString()}");
        Assert.Equal(HttpStatusCode.Accepted, answer.StatusCode);
        Assert.Equal("pending", body.Str("status"));
        Assert.Contains("shutting down", body.Str("reason"), StringComparison.Ordinal);
        var runId = Guid.Parse(body.Str("runId"));
        Assert.Equal($"/v1/runs/{runId}", answer.Headers.Location?.ToString());

        Assert.Equal(requested, await RequestedAsync(tenant));

        // The node's next process finds the run it left queued and leaves it to the executors (it stopped cleanly): not abandoned.
        await victim.StartAsync();
        await victim.WaitReadyAsync();
        output.WriteLine("queue row after the restart: " + await cluster.Database.ScalarAsync<string>("SELECT state FROM sandbox.run_queue WHERE run_id = $1", runId));
        await Eventually.WaitUntilAsync(async () => await cluster.Database.ScalarAsync<string>(
                "SELECT coalesce(data ->> 'status', type) FROM sandbox.mt_events WHERE stream_id = $1 AND type IN ('run_completed', 'run_failed', 'run_abandoned')", runId) is not null,
            () => "the run the draining node left in the queue did not end", TimeSpan.FromSeconds(90), pollMs: 250);
        Assert.Equal("succeeded", await cluster.Database.ScalarAsync<string>(
            "SELECT coalesce(data ->> 'status', type) FROM sandbox.mt_events WHERE stream_id = $1 AND type IN ('run_completed', 'run_failed', 'run_abandoned')", runId));
    }

    [Fact]
    public async Task AProcessGivenTheNodeIdOfALiveNodeExitsWithCode78AndSaysWhy()
    {
        var live = cluster.Api(0);
        var (exitCode, log) = await ServiceProcess.RunToExitAsync(cluster.SetupFor(live.Id), cluster.SettingsFor(live), TimeSpan.FromSeconds(120));
        output.WriteLine(log);

        Assert.Equal(78, exitCode);
        Assert.Contains($"sandbox-audited: not starting (exit code 78): Executor:NodeId '{live.Id}' is in use by another running process", log, StringComparison.Ordinal);
        Assert.DoesNotContain("Unhandled exception", log, StringComparison.Ordinal);
        Assert.True(await live.ReadyAsync(), "the live node is not ready any more");
    }

    private Task<long> ClaimedAsync(string tenant) =>
        cluster.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.run_queue WHERE tenant = $1 AND state = 'claimed'", tenant);

    private Task<long> RequestedAsync(string tenant) => cluster.Database.ScalarAsync<long>(
        "SELECT count(*) FROM sandbox.mt_events WHERE type IN ('run_requested', 'request_rejected') AND data -> 'caller' ->> 'tenant' = $1", tenant);

    private static async Task<HttpStatusCode?> ReadyzAsync(ClusterNode node)
    {
        using var client = new HttpClient { BaseAddress = node.Address, Timeout = TimeSpan.FromSeconds(5) };
        try
        {
            return (await client.GetAsync("/readyz")).StatusCode;
        }
        catch (HttpRequestException)
        {
            return null;
        }
    }
}
