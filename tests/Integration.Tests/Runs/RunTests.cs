using System.Net;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Runs;

[Collection(ServiceCollection.Name)]
public sealed class RunTests(ServiceFixture service)
{
    private readonly HttpClient _runner = service.Runner("alice", "tenant-runs");

    [Theory]
    [InlineData("python", "print('hello')")]
    [InlineData("javascript", "console.log('hello')")]
    [InlineData("shell", "echo hello")]
    public async Task EachLanguagePrintsHello(string language, string code)
    {
        var (response, body) = await _runner.RunAsync(new { language, code });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("succeeded", body.Str("status"));
        Assert.Equal("0", body.Str("exitCode"));
        Assert.Equal("hello\n", body.Str("stdout.content"));
        Assert.Equal(Sandbox.Audited.Domain.Hashing.Sha256Hex.Of("hello\n"), body.Str("stdout.sha256"));
        Assert.StartsWith("sha256:", body.Str("sandbox.imageId"));
    }

    [Fact]
    public async Task ClientsThatGoAwayMidRequestLeaveNoSlotTakenAndEveryRecordedRunEnds()
    {
        const string tenant = "tenant-goes-away";
        var runner = service.Runner("quitter", tenant);
        for (var i = 0; i < 12; i++)
        {
            // Cut at different points: while the body is read, during the write-ahead commit, while the run runs.
            using var cut = new CancellationTokenSource(TimeSpan.FromMilliseconds(2 + 3 * i));
            try
            {
                await runner.PostAsync("/v1/runs", System.Net.Http.Json.JsonContent.Create(new { language = "shell", code = "echo bye" }), cut.Token);
            }
            catch (OperationCanceledException)
            {
            }
        }
        var metrics = "";
        await Eventually.WaitUntilAsync(async () =>
        {
            metrics = await service.Client().GetStringAsync("/metrics");
            return metrics.Split('\n').Any(l => l.StartsWith("sandbox_admission_running", StringComparison.Ordinal) && l.EndsWith(" 0", StringComparison.Ordinal));
        }, () => $"slots are still taken:\n{string.Join('\n', metrics.Split('\n').Where(l => l.StartsWith("sandbox_admission", StringComparison.Ordinal)))}", TimeSpan.FromSeconds(20));

        // Every run whose request was recorded also ended (it belongs to the service, not to the connection).
        await Eventually.WaitUntilAsync(async () => await service.Database.ScalarAsync<long>("""
            SELECT count(*) FROM sandbox.mt_events r WHERE r.type = 'run_requested' AND r.data -> 'caller' ->> 'tenant' = $1
              AND NOT EXISTS (SELECT 1 FROM sandbox.mt_events t WHERE t.stream_id = r.stream_id AND t.type IN ('run_completed', 'run_failed', 'run_abandoned'))
            """, tenant) == 0, () => "a recorded run has no terminal event", TimeSpan.FromSeconds(20));
        var (response, body) = await runner.RunAsync(new { language = "shell", code = "echo still-serving" });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("still-serving\n", body.Str("stdout.content"));
    }

    [Fact]
    public async Task NonZeroExitCodeIsReported()
    {
        var (_, body) = await _runner.RunAsync(new { language = "python", code = "import sys\nprint('bye', file=sys.stderr)\nsys.exit(3)" });

        Assert.Equal("failed", body.Str("status"));
        Assert.Equal("3", body.Str("exitCode"));
        Assert.Equal("bye\n", body.Str("stderr.content"));
    }

    // The Python bootstrap skips the interpreter's heap teardown; what a program can observe of its exit stays
    // (exit status, atexit, threads, destructors of its globals, unclosed files flushed).
    [Theory]
    [InlineData("import sys\nsys.exit('no input')", "1", "", "no input\n")]
    [InlineData("import sys\nsys.exit(-1)", "255", "", "")]
    [InlineData("import atexit\natexit.register(lambda: print('at exit'))\nprint('main')", "0", "main\nat exit\n", "")]
    [InlineData("import threading, time\ndef late():\n    time.sleep(0.3)\n    print('thread')\nthreading.Thread(target=late).start()\nprint('main')", "0", "main\nthread\n", "")]
    [InlineData("import sys\nsys.stdout = open(1, 'w', buffering=1 << 16)\nprint('buffered')", "0", "buffered\n", "")]
    [InlineData("raise ValueError('boom')", "1", "", "ValueError: boom\n")]
    [InlineData("class Noisy:\n    def __del__(self):\n        print('finalized')\nnoisy = Noisy()\nprint('main')", "0", "main\nfinalized\n", "")]
    [InlineData("import os\nunclosed = os.fdopen(os.dup(1), 'w')\nunclosed.write('flushed at exit\\n')", "0", "flushed at exit\n", "")]
    [InlineData("import sys\nclass Shout:\n    def write(self, s): sys.__stdout__.write(s.upper())\n    def flush(self): sys.__stdout__.flush()\nsys.stdout = Shout()\nprint('quiet')", "0", "QUIET\n", "")]
    public async Task PythonExitsAsCPythonDoes(string code, string exitCode, string stdout, string stderrEnd)
    {
        var (_, body) = await _runner.RunAsync(new { language = "python", code });

        Assert.Equal(exitCode, body.Str("exitCode"));
        Assert.Equal(stdout, body.Str("stdout.content"));
        Assert.EndsWith(stderrEnd, body.Str("stderr.content"));
    }

    [Fact]
    public async Task ASynchronousRunSaysWhereItsTimeWent()
    {
        var (response, _) = await _runner.RunAsync(new { language = "shell", code = "echo timed" });

        var phases = response.Headers.GetValues("Server-Timing").Single().Split(", ")
            .Select(metric => metric.Split(";dur="))
            .ToDictionary(parts => parts[0], parts => double.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(["admit", "record", "sandbox", "run", "outcome"], phases.Keys);
        Assert.All(phases.Values, ms => Assert.True(ms >= 0, $"a phase took {ms} ms"));
        Assert.True(phases["admit"] > 0 && phases["record"] > 0 && phases["outcome"] > 0, "authentication, the rate limiter and both commits take time");
    }

    [Fact]
    public async Task InfiniteLoopIsStoppedAtTheTimeout()
    {
        var (response, body) = await _runner.RunAsync(new { language = "python", code = "print('started', flush=True)\nwhile True: pass", limits = new { timeoutMs = 1000 } });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("timed_out", body.Str("status"));
        Assert.Equal("true", body.Str("timedOut"));
        Assert.Equal("started\n", body.Str("stdout.content"));
        Assert.InRange(double.Parse(body.Str("wallMs"), System.Globalization.CultureInfo.InvariantCulture), 900, 5000);
    }

    [Fact]
    public async Task TheOnlyNetworkInterfaceIsLoopback()
    {
        var (_, body) = await _runner.RunAsync(new { language = "shell", code = "ls /sys/class/net" });

        Assert.Equal("succeeded", body.Str("status"));
        Assert.Equal("lo", body.Str("stdout.content").Trim());
    }

    [Fact]
    public async Task WritingUnderUsrFails()
    {
        var (_, body) = await _runner.RunAsync(new
        {
            language = "python",
            code = "try:\n    open('/usr/evil', 'w').write('x')\n    print('wrote')\nexcept OSError as e:\n    print('refused', e.errno)",
        });

        Assert.Equal("refused 30", body.Str("stdout.content").Trim()); // EROFS
    }

    [Fact]
    public async Task ProgramRunsAsNobodyWithoutCapabilities()
    {
        var (_, body) = await _runner.RunAsync(new { language = "shell", code = "id -u; id -g; grep -E '^Cap(Eff|Prm|Bnd|Amb):' /proc/self/status; grep NoNewPrivs /proc/self/status" });

        var lines = body.Str("stdout.content").Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Replace("\t", " ")).ToList();
        Assert.Equal("65534", lines[0]);
        Assert.Equal("65534", lines[1]);
        Assert.Contains("CapEff: 0000000000000000", lines);
        Assert.Contains("CapPrm: 0000000000000000", lines);
        Assert.Contains("CapBnd: 0000000000000000", lines);
        Assert.Contains("NoNewPrivs: 1", lines);
    }

    [Fact]
    public async Task StdinArgsAndFilesReachTheProgram()
    {
        var (_, body) = await _runner.RunAsync(new
        {
            language = "python",
            code = "import sys\nprint(sys.stdin.read().upper(), sys.argv[1:], open('data.txt').read())",
            stdin = "abc",
            args = new[] { "x", "y" },
            files = new[] { new { name = "data.txt", content = "payload" } },
        });

        Assert.Equal("ABC ['x', 'y'] payload\n", body.Str("stdout.content"));
    }

    [Fact]
    public async Task OwnerCanReadTheRunAndAnotherTenantCannot()
    {
        var (_, body) = await _runner.RunAsync(new { language = "shell", code = "echo mine" });
        var id = body.Str("runId");

        var (own, ownBody) = await _runner.GetJsonAsync($"/v1/runs/{id}");
        var (other, _) = await service.Runner("alice", "another-tenant").GetJsonAsync($"/v1/runs/{id}");
        var (colleague, _) = await service.Runner("bob", "tenant-runs").GetJsonAsync($"/v1/runs/{id}");
        var (auditor, _) = await service.Client(service.Token("carol", "tenant-runs", "auditor")).GetJsonAsync($"/v1/runs/{id}");

        Assert.Equal(HttpStatusCode.OK, own.StatusCode);
        Assert.Equal("mine\n", ownBody.Str("stdout.content"));
        Assert.Equal(HttpStatusCode.NotFound, other.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, colleague.StatusCode);
        Assert.Equal(HttpStatusCode.OK, auditor.StatusCode);
    }
}
