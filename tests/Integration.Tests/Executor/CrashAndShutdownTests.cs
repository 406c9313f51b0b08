using System.Net;
using Docker.DotNet.Models;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Infrastructure;
using ContainerSpec = Sandbox.Audited.Executor.Sandboxes.ContainerSpec;

namespace Sandbox.Audited.Tests.Executor;

/// <summary>
/// The service as a real child process that the test kills or stops: a crash leaves containers and an unfinished
/// run, which the next start must clean up and record; SIGTERM lets a running run finish and leaves nothing behind.
/// </summary>
public sealed class CrashAndShutdownTests : IAsyncLifetime
{
    private readonly TestDatabase _database = new();
    private readonly string _keyPath = Path.Combine(Path.GetTempPath(), "sbx-test-key-" + Guid.NewGuid().ToString("N") + ".pem");
    private readonly string _nodeId = "proc-" + Guid.NewGuid().ToString("N")[..8];
    private readonly List<ServiceProcess> _processes = [];
    private ServiceProcess.Setup _setup = null!;

    public async Task InitializeAsync()
    {
        await _database.CreateAsync();
        DevelopmentKeys.Create(_keyPath);
        _setup = new ServiceProcess.Setup(_database, _keyPath, _nodeId);
    }

    [Fact]
    public async Task RunInFlightWhenTheServiceIsKilledIsAbandonedAndItsContainersRemovedAtRestart()
    {
        var first = await StartAsync();
        using var runner = first.Client(_setup.Token("ivan", "tenant-crash", Roles.Runner));

        // memoryMb off the default profile: a cold sandbox labelled with the run id, next to the pool's.
        var (accepted, body) = await runner.RunAsync(new
        {
            language = "shell", code = "echo started; sleep 120", wait = false, limits = new { memoryMb = 64, timeoutMs = 60000 },
        });
        Assert.Equal(HttpStatusCode.Accepted, accepted.StatusCode);
        var runId = body.Str("runId");
        await WaitForContainerAsync(c => Label(c, ContainerSpec.RunLabel) == runId && c.State == "running");
        await WaitForStatusAsync(runner, runId, "running"); // SandboxCreated and SandboxStarted are recorded
        var beforeCrash = (await Containers.OfNodeAsync(_nodeId)).Select(c => c.ID).ToHashSet();

        await first.CrashAsync();
        Assert.Contains(await Containers.OfNodeAsync(_nodeId), c => Label(c, ContainerSpec.RunLabel) == runId); // the crash left it

        var second = await StartAsync();
        using var again = second.Client(_setup.Token("ivan", "tenant-crash", Roles.Runner));
        var (found, run) = await again.GetJsonAsync($"/v1/runs/{runId}");
        var (_, events) = await again.GetJsonAsync($"/v1/runs/{runId}/events");

        Assert.Equal(HttpStatusCode.OK, found.StatusCode);
        Assert.Equal("abandoned", run.Str("status"));
        Assert.Contains("in flight", run.Str("reason"));
        var types = events.AsArray().Select(e => e!.Str("type")).ToList();
        Assert.Equal("run_abandoned", types.Last(t => t != "sandbox_removed"));
        Assert.Single(types, t => t is "run_completed" or "run_failed" or "run_abandoned");
        Assert.Equal(_nodeId, events.AsArray().Last(e => e!.Str("type") == "run_abandoned")!.Str("data.node"));
        // The start-up sweep removed its container, and says so on the run, after the abandonment.
        Assert.Equal("run_abandoned", types[^2]);
        Assert.Equal(("sandbox_removed", "swept_at_startup"), (types[^1], events.AsArray()[^1]!.Str("data.how")));
        // The sandbox that served the run was recorded while it ran, so the crashed run's history names it.
        Assert.Equal(["run_requested", "policy_evaluated", "run_queued", "sandbox_created", "sandbox_started", "run_abandoned"], types.Where(t => t != "sandbox_removed"));

        // Only the new process's fresh pool remains: nothing of the crashed one, nothing labelled with a run.
        var left = await Containers.LeftoversAsync(_nodeId, c => !beforeCrash.Contains(c.ID) && Label(c, ContainerSpec.RunLabel) == ContainerSpec.PooledRunId);
        Assert.True(left.Count == 0, "Left behind: " + Containers.Describe(left));

        // And the restarted service runs code.
        var (ok, fresh) = await again.RunAsync(new { language = "shell", code = "echo back" });
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        Assert.Equal("back\n", fresh.Str("stdout.content"));
    }

    [Fact]
    public async Task SigtermLetsTheRunningRunFinishRefusesNewOnesAndLeavesNoContainer()
    {
        var service = await StartAsync();
        using var runner = service.Client(_setup.Token("judy", "tenant-sigterm", Roles.Runner));

        var running = runner.RunAsync(new { language = "shell", code = "sleep 2; echo done", limits = new { memoryMb = 64 } });
        await WaitForContainerAsync(c => Label(c, ContainerSpec.RunLabel) != ContainerSpec.PooledRunId && c.State == "running");

        service.Terminate();
        await Task.Delay(300);
        HttpStatusCode? refused;
        try
        {
            refused = (await runner.RunAsync(new { language = "shell", code = "echo too-late" })).Response.StatusCode;
        }
        catch (HttpRequestException)
        {
            refused = null; // connection refused: the server is gone, which is a refusal too
        }
        var (response, run) = await running;
        var exited = await service.WaitForExitAsync(TimeSpan.FromSeconds(40));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("succeeded", run.Str("status"));
        Assert.Equal("done\n", run.Str("stdout.content"));
        Assert.True(refused is null or HttpStatusCode.ServiceUnavailable, $"A run during shutdown got {refused}.");
        Assert.True(exited, "The service did not exit after SIGTERM.");
        Assert.Equal(0, service.ExitCode);
        Assert.Empty(await Containers.OfNodeAsync(_nodeId));
        Assert.DoesNotContain("the reaper will retry", service.Log);
        var removed = await _database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'sandbox_removed'", Guid.Parse(run.Str("runId")));
        Assert.Equal(1, removed);
    }

    private async Task<ServiceProcess> StartAsync()
    {
        var process = await ServiceProcess.StartAsync(_setup);
        _processes.Add(process);
        return process;
    }

    private Task WaitForContainerAsync(Func<ContainerListResponse, bool> match) =>
        Eventually.WaitUntilAsync(async () => (await Containers.OfNodeAsync(_nodeId)).Any(match),
            () => "No matching container appeared. " + string.Join("\n", _processes.Select(p => p.Log)), TimeSpan.FromSeconds(30));

    private static string? Label(ContainerListResponse container, string label) =>
        container.Labels.TryGetValue(label, out var value) ? value : null;

    public async Task DisposeAsync()
    {
        foreach (var process in _processes)
            await process.DisposeAsync();
        // Whatever a failed test left: remove it so that one failure does not leak into the engine.
        await Containers.RemoveAllOfNodeAsync(_nodeId);
        await _database.DisposeAsync();
        File.Delete(_keyPath);
    }

    private static Task WaitForStatusAsync(HttpClient client, string runId, string status)
    {
        var last = "";
        return Eventually.WaitUntilAsync(async () => (last = (await client.GetJsonAsync($"/v1/runs/{runId}")).Body.Str("status")) == status,
            () => $"Run {runId} never reached status {status} (last: {last}).", TimeSpan.FromSeconds(30));
    }
}
