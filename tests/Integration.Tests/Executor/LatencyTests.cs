using System.Diagnostics;
using System.Net;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Infrastructure;
using Xunit.Abstractions;
using ContainerSpec = Sandbox.Audited.Executor.Sandboxes.ContainerSpec;

namespace Sandbox.Audited.Tests.Executor;

/// <summary>
/// Measures (prints, never asserts) the latency of a run through the real HTTP API, audit committed, against the
/// service as a child process: warm (a pooled sandbox; the test waits for the refill between runs) and cold (no pool).
/// What it asserts is that the warm runs really were warm and the cold ones cold.
/// </summary>
public sealed class LatencyTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const int Runs = 15;
    private readonly TestDatabase _database = new();
    private readonly string _keyPath = Path.Combine(Path.GetTempPath(), "sbx-test-key-" + Guid.NewGuid().ToString("N") + ".pem");
    private readonly string _nodeId = "lat-" + Guid.NewGuid().ToString("N")[..8];
    private ServiceProcess? _process;

    public async Task InitializeAsync()
    {
        await _database.CreateAsync();
        DevelopmentKeys.Create(_keyPath);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task RunLatencyThroughTheApiIsMeasured(bool warm)
    {
        var setup = new ServiceProcess.Setup(_database, _keyPath, _nodeId);
        _process = await ServiceProcess.StartAsync(setup, new Dictionary<string, string> { ["Executor__PoolSizePerLanguage"] = warm ? "1" : "0" });
        using var runner = _process.Client(setup.Token("lena", "tenant-latency", Roles.Runner));

        var timings = new List<double>();
        var used = new HashSet<string>();
        for (var i = 0; i < Runs + 3; i++)
        {
            if (warm)
                await WaitForFullPoolAsync(used);
            var watch = Stopwatch.StartNew();
            var (response, run) = await runner.RunAsync(new { language = "python", code = "print(1)" });
            watch.Stop();

            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("1\n", run.Str("stdout.content"));
            Assert.Equal(warm ? "true" : "false", run.Str("sandbox.fromPool"));
            used.Add(run.Str("sandbox.containerId"));
            if (i >= 3) // the first runs pay for JIT and connection set-up
                timings.Add(watch.Elapsed.TotalMilliseconds);
        }
        timings.Sort();
        output.WriteLine($"{(warm ? "warm" : "cold")} python print(1) through the API, {Runs} runs: p50={timings[Runs / 2]:F1} ms "
            + $"min={timings[0]:F1} ms max={timings[^1]:F1} ms");
    }

    private async Task WaitForFullPoolAsync(HashSet<string> used)
    {
        // One fresh pooled sandbox per language, all started (a used one stays "pool"-labelled until it is removed).
        await Eventually.WaitUntilAsync(async () => (await Containers.OfNodeAsync(_nodeId)).Count(c => c.State == "running" && !used.Contains(c.ID)
                && c.Labels.TryGetValue(ContainerSpec.RunLabel, out var run) && run == ContainerSpec.PooledRunId) >= 3,
            () => "The pool did not refill.", TimeSpan.FromSeconds(30), pollMs: 50);
        await Task.Delay(150);
    }

    public async Task DisposeAsync()
    {
        if (_process is not null)
            await _process.DisposeAsync();
        await Containers.RemoveAllOfNodeAsync(_nodeId);
        await _database.DisposeAsync();
        File.Delete(_keyPath);
    }
}
