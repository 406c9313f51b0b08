using System.Diagnostics;
using System.Net;
using Sandbox.Audited.Executor.Pool;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Executor;

/// <summary>A service whose Docker endpoint is a socket nobody listens on yet (the engine is away).</summary>
public sealed class EngineAwayFixture : ServiceFixture, IAsyncLifetime
{
    public SocketProxy Engine { get; } = SocketProxy.Unix(Path.Combine(Path.GetTempPath(), "sbx-engine-" + Guid.NewGuid().ToString("N")[..8] + ".sock"));

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Executor:DockerEndpoint"] = Engine.Endpoint,
        ["Executor:NodeId"] = AwayNodeId,
    };

    /// <summary>Its own node id, so that what it leaves in the engine (nothing, after dispose) is easy to find.</summary>
    public string AwayNodeId { get; } = "away-" + Guid.NewGuid().ToString("N")[..8];

    public new async Task DisposeAsync()
    {
        await base.DisposeAsync(); // drains the pool through the proxy, then the proxy goes
        await Engine.DisposeAsync();
    }
}

[CollectionDefinition(Name)]
public sealed class EngineAwayCollection : ICollectionFixture<EngineAwayFixture>
{
    public const string Name = "engine-away";
}

[Collection(EngineAwayCollection.Name)]
public sealed class EngineUnavailableTests(EngineAwayFixture service)
{
    [Fact]
    public async Task RunsFailFastWhileTheEngineIsAwayAndTheServiceRecoversWhenItReturns()
    {
        var runner = service.Runner("kim", "tenant-engine");
        var pool = (SandboxPool)service.Services.GetService(typeof(SandboxPool))!;

        var watch = Stopwatch.StartNew();
        var (response, problem) = await runner.RunAsync(new { language = "python", code = "print(1)" });
        watch.Stop();
        var (ready, readiness) = await service.Client().GetJsonAsync("/readyz");
        var (sbom, sbomProblem) = await runner.GetJsonAsync("/v1/runtimes/python/sbom");
        var (_, events) = await runner.GetJsonAsync($"/v1/runs/{problem.Str("runId")}/events");
        var failuresBefore = pool.RefillFailures;
        await Task.Delay(TimeSpan.FromSeconds(4));
        var failuresDuring = pool.RefillFailures - failuresBefore;

        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal("/problems/sandbox-unavailable", problem.Str("type"));
        // Fixed, actionable texts: what the engine's client said (its socket, the errno) goes to the log only.
        Assert.Equal("The run was recorded but no sandbox could be created: the container engine is unavailable or could not start one. Retry shortly.",
            problem.Str("detail"));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, sbom.StatusCode);
        Assert.Equal("The image of runtime 'python' cannot be read now: the container engine is unavailable. Retry later.", sbomProblem.Str("detail"));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10), $"The refusal took {watch.Elapsed}; it must not wait for a dead engine.");
        Assert.Equal("run_failed", events.AsArray()[^1]!.Str("type"));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
        Assert.Equal("unavailable", readiness.Str("checks.docker"));
        Assert.Equal("ok", readiness.Str("checks.postgres"));
        Assert.InRange(failuresDuring, 0, 4); // backing off, not spinning
        Assert.Equal(0, pool.Size);

        service.Engine.Start();

        await Eventually.WaitUntilAsync(async () => (await service.Client().GetAsync("/readyz")).StatusCode == HttpStatusCode.OK,
            () => "/readyz never turned ready", TimeSpan.FromSeconds(45), pollMs: 250);
        var (ok, run) = await runner.RunAsync(new { language = "python", code = "print('back')" });
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        Assert.Equal("back\n", run.Str("stdout.content"));
        await Eventually.WaitUntilAsync(() => Task.FromResult(pool.Size > 0), () => "the pool never refilled", TimeSpan.FromSeconds(45), pollMs: 250);
    }
}
