using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Executor;
using Sandbox.Audited.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Sandbox.Audited.Tests.Faults;

/// <summary>
/// The fault suite, short form: the real service as a process under load while PostgreSQL (a private cluster), the Docker
/// engine (through a socket proxy the test cuts) or the service itself fails; then the invariants, read from the database
/// and the engine. Each test prints its figures (requests by status, time to recover, peak memory).
/// </summary>
[Collection(FaultCollection.Name)]
public sealed class FaultTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly string _keyPath = Path.Combine(Path.GetTempPath(), "sbx-test-key-" + Guid.NewGuid().ToString("N") + ".pem");
    private readonly string _journal = Path.Combine(Path.GetTempPath(), "sbx-journal-" + Guid.NewGuid().ToString("N")[..8]);
    private readonly string _nodeId = "fault-" + Guid.NewGuid().ToString("N")[..8];
    private readonly List<ServiceProcess> _processes = [];
    private readonly List<IAsyncDisposable> _resources = [];
    private readonly DateTimeOffset _since = DateTimeOffset.UtcNow.AddSeconds(-1);

    public Task InitializeAsync()
    {
        DevelopmentKeys.Create(_keyPath);
        return Task.CompletedTask;
    }

    [Fact]
    public async Task OutcomesOfRunsCaughtByAPostgresOutageAreJournaledThenCommittedAndReadinessDrainsAtSigterm()
    {
        var postgres = await PrivatePostgres.StartAsync();
        _resources.Add(postgres); // disposed after the database (reverse order)
        var database = new TestDatabase(postgres.AdminConnection);
        await database.CreateAsync();
        _resources.Add(database);
        var setup = new ServiceProcess.Setup(database, _keyPath, _nodeId);
        var service = await StartAsync(setup);
        await WaitReadyAsync(service);
        using var runner = service.Client(setup.Token("olga", "tenant-faults", Roles.Runner));

        // Runs of ~1 s, so that several are inside their sandboxes when the database stops.
        var load = new Load(runner, new { language = "shell", code = "sleep 1; echo ok" });
        var loading = load.RunAsync(clients: 4);
        await Task.Delay(TimeSpan.FromSeconds(2));
        // Stopped while runs are inside their sandboxes (announced, not ended), whatever the machine's pace: their outcomes
        // cannot be committed and must go to the journal.
        await Eventually.WaitUntilAsync(async () => await database.ScalarAsync<long>("""
            SELECT count(*) FROM sandbox.mt_events s WHERE s.type = 'sandbox_started'
              AND NOT EXISTS (SELECT 1 FROM sandbox.mt_events t WHERE t.stream_id = s.stream_id AND t.type IN ('run_completed', 'run_failed', 'run_abandoned'))
            """) > 0, () => "no run was inside its sandbox", TimeSpan.FromSeconds(20), pollMs: 20);
        await postgres.StopAsync();
        var down = Stopwatch.StartNew();
        await Task.Delay(TimeSpan.FromSeconds(6));
        await postgres.StartServerAsync();
        var outage = down.Elapsed;
        var back = Stopwatch.StartNew();
        await Task.Delay(TimeSpan.FromSeconds(3));
        load.Stop();
        await loading;

        // Every journaled outcome reaches the database without a restart.
        await Eventually.WaitUntilAsync(async () => (await GetReadinessAsync(service)).Str("checks.journal") == "empty",
            () => "the journal never emptied:\n" + service.Log, TimeSpan.FromSeconds(60), pollMs: 200);
        var recovered = back.Elapsed;
        var recording = load.Answers.Where(a => a.Status == "recording").ToList();
        foreach (var run in recording)
        {
            var (found, body) = await runner.GetJsonAsync($"/v1/runs/{run.RunId}");
            Assert.Equal(HttpStatusCode.OK, found.StatusCode);
            Assert.Equal("succeeded", body.Str("status"));
            Assert.Equal("ok\n", body.Str("stdout.content"));
        }

        // SIGTERM with a run in flight: readiness turns 503 at once, the run still finishes.
        var (accepted, slow) = await runner.RunAsync(new { language = "shell", code = "sleep 3; echo late", wait = false, limits = new { memoryMb = 64 } });
        Assert.Equal(HttpStatusCode.Accepted, accepted.StatusCode);
        await Task.Delay(500);
        service.Terminate();
        var drained = Stopwatch.StartNew();
        await Eventually.WaitUntilAsync(async () => (await Anonymous(service).GetAsync("/readyz")).StatusCode == HttpStatusCode.ServiceUnavailable,
            () => "readiness did not turn 503 after SIGTERM", TimeSpan.FromSeconds(2), pollMs: 20);
        var drainedAfter = drained.Elapsed;
        Assert.True(await service.WaitForExitAsync(TimeSpan.FromSeconds(40)), "the service did not exit after SIGTERM");
        var lateStatus = await database.ScalarAsync<string>(
            "SELECT data ->> 'status' FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'run_completed'", Guid.Parse(slow.Str("runId")));

        output.WriteLine($"PostgreSQL outage {outage.TotalSeconds:F1} s under 4 clients; requests by status: {FaultInvariants.Figures(load.Answers.Select(a => (a.Http, a.Status)))}");
        output.WriteLine($"journaled (202 recording): {recording.Count}; journal committed {recovered.TotalSeconds:F2} s after PostgreSQL returned; readiness 503 {drainedAfter.TotalMilliseconds:F0} ms after SIGTERM");
        Assert.DoesNotContain(load.Answers, a => a.Http >= 500 && a.Http != 503);
        Assert.True(recording.Count > 0, "no outcome was journaled; the service's log:\n" + service.Log);
        Assert.All(recording, r => Assert.Equal(5, r.RetryAfter));
        Assert.Equal("succeeded", lateStatus);
        var violations = await FaultInvariants.CheckAsync(database, _nodeId, _since, ["tenant-faults"]);
        Assert.True(violations.Count == 0, string.Join("\n", violations));
    }

    [Fact]
    public async Task AnOutcomeJournaledBeforeAKillIsCommittedAtRestartNotAbandoned()
    {
        var postgres = await PrivatePostgres.StartAsync();
        _resources.Add(postgres);
        var database = new TestDatabase(postgres.AdminConnection);
        await database.CreateAsync();
        _resources.Add(database);
        var setup = new ServiceProcess.Setup(database, _keyPath, _nodeId);
        var service = await StartAsync(setup);
        await WaitReadyAsync(service);
        using var runner = service.Client(setup.Token("quinn", "tenant-journal", Roles.Runner));

        // Off the pool's profile: a cold sandbox labelled with the run, so the test sees when it runs (write-ahead committed).
        var running = runner.RunAsync(new { language = "shell", code = "sleep 3; echo kept", limits = new { memoryMb = 64 } });
        await Eventually.WaitUntilAsync(async () => (await Containers.OfNodeAsync(_nodeId)).Any(c =>
                c.State == "running" && c.Labels.TryGetValue(Sandbox.Audited.Executor.Sandboxes.ContainerSpec.RunLabel, out var label) && Guid.TryParse(label, out _)),
            () => "the run never got its sandbox", TimeSpan.FromSeconds(30), pollMs: 50);
        await postgres.StopAsync();
        var (response, run) = await running;
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Equal("recording", run.Str("status"));
        Assert.Equal("kept\n", run.Str("stdout.content"));
        await service.CrashAsync(); // the outcome exists only in the journal now

        await postgres.StartServerAsync();
        var second = await StartAsync(setup);
        var runId = Guid.Parse(run.Str("runId"));
        var events = await EventTypesAsync(database, runId);
        Assert.DoesNotContain("run_abandoned", events);
        Assert.Equal("succeeded", await database.ScalarAsync<string>(
            "SELECT data ->> 'status' FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'run_completed'", runId));
        // The journal kept the output beside the events, not inside them: the record names it by digest, the store has it.
        Assert.Equal(1L, await database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'output_recorded'", runId));
        Assert.Equal("", await database.ScalarAsync<string>(
            "SELECT data -> 'stdout' ->> 'content' FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'output_recorded'", runId));
        using var reader = second.Client(setup.Token("quinn", "tenant-journal", Roles.Runner));
        var (read, committed) = await reader.GetJsonAsync($"/v1/runs/{runId}");
        Assert.Equal(HttpStatusCode.OK, read.StatusCode);
        Assert.Equal("kept\n", committed.Str("stdout.content"));
        second.Terminate();
        Assert.True(await second.WaitForExitAsync(TimeSpan.FromSeconds(40)), "the service did not exit after SIGTERM");
        Assert.Empty(Directory.GetFiles(Path.Combine(_journal, _nodeId), "*.json"));
        var violations = await FaultInvariants.CheckAsync(database, _nodeId, _since, ["tenant-journal"]);
        Assert.True(violations.Count == 0, string.Join("\n", violations));
    }

    [Fact]
    public async Task EngineAwayAndBackUnderLoadThenAKillMidRunLeaveATrueCompleteRecord()
    {
        var database = new TestDatabase();
        await database.CreateAsync();
        _resources.Add(database);
        var engine = SocketProxy.Unix(Path.Combine(Path.GetTempPath(), "sbx-engine-" + Guid.NewGuid().ToString("N")[..8] + ".sock"));
        _resources.Add(engine);
        engine.Start();
        var setup = new ServiceProcess.Setup(database, _keyPath, _nodeId);
        var settings = new Dictionary<string, string> { ["Executor__DockerEndpoint"] = engine.Endpoint };
        var service = await StartAsync(setup, settings);
        await WaitReadyAsync(service);
        await Eventually.WaitUntilAsync(async () => (await Containers.OfNodeAsync(_nodeId)).Count(c => c.State == "running") >= 3,
            () => "the pool never filled", TimeSpan.FromSeconds(60), pollMs: 250);
        using var runner = service.Client(setup.Token("pavel", "tenant-engine-fault", Roles.Runner));

        var load = new Load(runner, new { language = "javascript", code = "console.log('ok')" }, new { language = "shell", code = "echo ok" });
        // The engine goes while the pool is full: every attach stream of the pooled sandboxes breaks, as when dockerd restarts.
        await engine.StopAsync();
        var loading = load.RunAsync(clients: 3);
        await Task.Delay(TimeSpan.FromSeconds(4));
        engine.Start();
        var back = DateTimeOffset.UtcNow;
        await Eventually.WaitUntilAsync(async () => (await Anonymous(service).GetAsync("/readyz")).StatusCode == HttpStatusCode.OK,
            () => "not ready after the engine returned", TimeSpan.FromSeconds(30), pollMs: 100);
        var readyAfter = DateTimeOffset.UtcNow - back;
        await Task.Delay(TimeSpan.FromSeconds(5));
        load.Stop();
        await loading;

        // Once the engine is back, no run is handed a dead pooled sandbox: every run started afterwards succeeds.
        var after = load.Answers.Where(a => a.SentAt > back + readyAfter).ToList();
        output.WriteLine($"engine away 4 s (pool full when it went) under 3 clients; requests by status: {FaultInvariants.Figures(load.Answers.Select(a => (a.Http, a.Status)))}; " +
            $"ready {readyAfter.TotalSeconds:F2} s after it returned; after that: {FaultInvariants.Figures(after.Select(a => (a.Http, a.Status)))}");
        Assert.NotEmpty(after);
        // These programs cannot fail by themselves: a run cut by the engine is an error of the service, never "failed".
        Assert.DoesNotContain(load.Answers, a => a.Status == "failed");
        Assert.All(after, a => Assert.Equal((200, "succeeded"), (a.Http, a.Status)));
        Assert.Contains("is dead", service.Log);

        // kill -9 mid-run; the next process sweeps the container, records its removal and the run's true end.
        var (accepted, body) = await runner.RunAsync(new { language = "shell", code = "echo started; sleep 60", wait = false, limits = new { memoryMb = 64, timeoutMs = 60000 } });
        Assert.Equal(HttpStatusCode.Accepted, accepted.StatusCode);
        var runId = Guid.Parse(body.Str("runId"));
        await Eventually.WaitUntilAsync(async () => (await runner.GetJsonAsync($"/v1/runs/{runId}")).Body.Str("status") == "running",
            () => "the run never ran", TimeSpan.FromSeconds(30), pollMs: 100);
        await service.CrashAsync();
        var second = await StartAsync(setup, settings);
        var events = await EventTypesAsync(database, runId);
        Assert.Equal("run_abandoned", events.Last(t => t != "sandbox_removed"));
        Assert.Contains("sandbox_removed", events);
        Assert.Equal("swept_at_startup", await database.ScalarAsync<string>(
            "SELECT data ->> 'how' FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'sandbox_removed'", runId));

        second.Terminate();
        Assert.True(await second.WaitForExitAsync(TimeSpan.FromSeconds(40)), "the service did not exit after SIGTERM");
        var violations = await FaultInvariants.CheckAsync(database, _nodeId, _since, ["tenant-engine-fault"]);
        Assert.True(violations.Count == 0, string.Join("\n", violations));
    }

    [Fact]
    public async Task LargeOutputsAreStoredOnceAndPeakMemoryStaysBounded()
    {
        var database = new TestDatabase();
        await database.CreateAsync();
        _resources.Add(database);
        var setup = new ServiceProcess.Setup(database, _keyPath, _nodeId);
        // The default bundle with the runners' output limit raised to the ceiling (4 MiB per stream).
        var policies = CopyPolicies(yaml => yaml.Replace("outputBytes: 1048576", "outputBytes: 4194304", StringComparison.Ordinal));
        var service = await StartAsync(setup, new Dictionary<string, string>
        {
            ["Admission__MaxConcurrentRuns"] = "10", ["Admission__MaxConcurrentRunsPerTenant"] = "10", ["Executor__PoolSizePerLanguage"] = "0",
            ["Policies__Directory"] = policies,
        });
        await WaitReadyAsync(service);
        var idleKb = RssKb(service.Pid);
        using var runner = service.Client(setup.Token("rosa", "tenant-large", Roles.Runner));
        // Where output can be kept: the events and (since the evidence store) the content tables.
        const string sql = "SELECT pg_total_relation_size('sandbox.mt_events')"
            + " + pg_total_relation_size('sandbox.evidence_chunks') + pg_total_relation_size('sandbox.evidence_blobs')";
        await database.ExecuteAsync("VACUUM FULL sandbox.mt_events");
        var before = await database.ScalarAsync<long>(sql);

        // Two rounds of 10 runs at once, each writing 4 MiB to stdout and 4 MiB to stderr (random, so PostgreSQL cannot compress it away).
        var code = "import base64, os, sys\nd = base64.b64encode(os.urandom(3145728))\nsys.stdout.buffer.write(d); sys.stdout.flush(); sys.stderr.buffer.write(d)";
        var statuses = new List<string>();
        var clock = Stopwatch.StartNew();
        for (var round = 0; round < 2; round++)
        {
            var runs = await Task.WhenAll(Enumerable.Range(0, 10).Select(_ => runner.RunAsync(new
            {
                language = "python", code, limits = new { outputBytes = 4194304, timeoutMs = 30000 },
            })));
            // The answer carries the whole output (read back from the store in segments): its bytes hash to the recorded digest.
            statuses.AddRange(runs.Select(r => $"{(int)r.Response.StatusCode} {r.Body.Str("status")} {r.Body.Str("stdout.bytes")}"
                + (Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(r.Body.Str("stdout.content"))))
                    == r.Body.Str("stdout.sha256") ? " whole" : " not whole")));
        }
        var elapsed = clock.Elapsed;
        var peakKb = PeakRssKb(service.Pid);
        await Task.Delay(2000); // removals and their SandboxRemoved
        var after = await database.ScalarAsync<long>(sql);
        var recorded = 20L * 2 * 4194304;

        output.WriteLine($"20 runs x 2 streams x 4 MiB: {string.Join(", ", statuses.GroupBy(s => s).Select(g => $"{g.Key}: {g.Count()}"))}");
        output.WriteLine($"database grew {(after - before) / 1048576.0:F1} MiB for {recorded / 1048576.0:F0} MiB of output ({(double)(after - before) / recorded:F2}x)");
        output.WriteLine($"service RSS: {idleKb / 1024.0:F0} MB ready, peak {peakKb / 1024.0:F0} MB (bound {MemoryBoundKb / 1024} MB); 20 runs in {elapsed.TotalSeconds:F1} s");
        Assert.All(statuses, s => Assert.Equal("200 succeeded 4194304 whole", s));
        Assert.True(after - before < recorded * 1.5, $"output stored more than once: grew {after - before} bytes for {recorded}");
        // The bound for the defaults (docs/configuration.md, "Memory"): output beyond Executor:MaxBufferedOutputBytes is spooled,
        // stored and answered a chunk at a time, so ten runs with 8 MiB of output each stay within it.
        Assert.True(peakKb <= MemoryBoundKb, $"peak RSS {peakKb / 1024} MB exceeds the {MemoryBoundKb / 1024} MB bound");
        service.Terminate();
        await service.WaitForExitAsync(TimeSpan.FromSeconds(40));
    }

    [Fact]
    public async Task FourConcurrentRunsWith64MbInputsStayWithinTheMemoryBound()
    {
        var database = new TestDatabase();
        await database.CreateAsync();
        _resources.Add(database);
        var setup = new ServiceProcess.Setup(database, _keyPath, _nodeId);
        // A 64 MiB input needs a /tmp larger than the runners' 64 MiB: raised within the ceiling (128 MiB).
        var policies = CopyPolicies(yaml => yaml.Replace("tmpfsMb: 64", "tmpfsMb: 128", StringComparison.Ordinal));
        var service = await StartAsync(setup, new Dictionary<string, string>
        {
            ["Executor__PoolSizePerLanguage"] = "0", ["Policies__Directory"] = policies,
        });
        await WaitReadyAsync(service);
        var idleKb = RssKb(service.Pid);
        using var runner = service.Client(setup.Token("ines", "tenant-inputs", Roles.Runner));
        runner.Timeout = TimeSpan.FromMinutes(3);

        // Four runs at once, each sent as multipart/form-data (what curl -F sends) with its own 64 MiB file, which the program hashes.
        const string code = "import hashlib\nh = hashlib.sha256()\nwith open('in.bin', 'rb') as f:\n    for b in iter(lambda: f.read(1 << 20), b''):\n        h.update(b)\nprint(h.hexdigest())";
        var clock = Stopwatch.StartNew();
        var runs = await Task.WhenAll(Enumerable.Range(0, 4).Select(async n =>
        {
            var input = new GeneratedContent(seed: n, InputBytes);
            using var form = new MultipartFormDataContent
            {
                { new StringContent("python"), "language" },
                { new StringContent(code), "code" },
                { new StringContent("""{"tmpfsMb": 80, "timeoutMs": 60000}"""), "limits" },
                { new StreamContent(input), "in.bin", "in.bin" },
            };
            var response = await runner.PostAsync("/v1/runs", form);
            return (Response: response, Body: await ApiCalls.BodyAsync(response), Sha256: input.Sha256 ?? "(not all sent)");
        }));
        var elapsed = clock.Elapsed;
        var peakKb = PeakRssKb(service.Pid);

        output.WriteLine($"4 runs x 64 MiB input: {string.Join(", ", runs.Select(r => $"{(int)r.Response.StatusCode} {r.Body.Str("status")}"))} in {elapsed.TotalSeconds:F1} s");
        output.WriteLine($"service RSS: {idleKb / 1024.0:F0} MB ready, peak {peakKb / 1024.0:F0} MB (bound {MemoryBoundKb / 1024} MB)");
        foreach (var (response, body, sha256) in runs)
        {
            Assert.True(response.StatusCode == HttpStatusCode.OK, body.ToJsonString());
            Assert.True(body.Str("status") == "succeeded", body.ToJsonString());
            Assert.Equal(sha256 + "\n", body.Str("stdout.content"));
        }
        Assert.True(peakKb <= MemoryBoundKb, $"peak RSS {peakKb / 1024} MB exceeds the {MemoryBoundKb / 1024} MB bound");
        service.Terminate();
        await service.WaitForExitAsync(TimeSpan.FromSeconds(40));
    }

    private const long InputBytes = 64L * 1024 * 1024;

    /// <summary>The default policy bundle with an edit applied to each file, in this test's own folder.</summary>
    private string CopyPolicies(Func<string, string> edit)
    {
        var root = Path.Combine(TestEnvironment.RepoRoot, "policies");
        var policies = Path.Combine(_journal, "policies");
        Directory.CreateDirectory(Path.Combine(policies, "tests"));
        foreach (var file in Directory.GetFiles(root, "*.yaml", SearchOption.AllDirectories))
            File.WriteAllText(Path.Combine(policies, Path.GetRelativePath(root, file)), edit(File.ReadAllText(file)));
        return policies;
    }

    /// <summary>The service's peak resident memory with the default settings, whatever the output and input sizes.</summary>
    private const long MemoryBoundKb = 300 * 1024;

    private static long PeakRssKb(int pid) => StatusKb(pid, "VmHWM:");

    private static long RssKb(int pid) => StatusKb(pid, "VmRSS:");

    private static long StatusKb(int pid, string field) =>
        long.Parse(File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith(field, StringComparison.Ordinal))
            .Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture);

    private async Task<ServiceProcess> StartAsync(ServiceProcess.Setup setup, IDictionary<string, string>? settings = null)
    {
        var all = new Dictionary<string, string> { ["Executor__JournalDirectory"] = _journal };
        foreach (var (key, value) in settings ?? new Dictionary<string, string>())
            all[key] = value;
        var process = await ServiceProcess.StartAsync(setup, all);
        _processes.Add(process);
        return process;
    }

    private static HttpClient Anonymous(ServiceProcess service) => new() { BaseAddress = service.Address, Timeout = TimeSpan.FromSeconds(10) };

    private static Task WaitReadyAsync(ServiceProcess service) =>
        Eventually.WaitUntilAsync(async () => (await Anonymous(service).GetAsync("/readyz")).StatusCode == HttpStatusCode.OK,
            () => "the service never turned ready:\n" + service.Log, TimeSpan.FromSeconds(60), pollMs: 200);

    private static async Task<JsonNode> GetReadinessAsync(ServiceProcess service)
    {
        try
        {
            return (await Anonymous(service).GetJsonAsync("/readyz")).Body;
        }
        catch (HttpRequestException)
        {
            return new JsonObject();
        }
    }

    private static async Task<List<string>> EventTypesAsync(TestDatabase database, Guid runId)
    {
        var types = await database.ScalarAsync<string>("SELECT string_agg(type, ',' ORDER BY version) FROM sandbox.mt_events WHERE stream_id = $1", runId);
        return (types ?? "").Split(',').ToList();
    }

    public async Task DisposeAsync()
    {
        foreach (var process in _processes)
            await process.DisposeAsync();
        await Containers.RemoveAllOfNodeAsync(_nodeId);
        _resources.Reverse();
        foreach (var resource in _resources)
            await resource.DisposeAsync();
        File.Delete(_keyPath);
        if (Directory.Exists(_journal))
            Directory.Delete(_journal, recursive: true);
    }

    /// <summary>Clients that send runs back to back until stopped, keeping what each answer said.</summary>
    private sealed class Load(HttpClient client, params object[] requests)
    {
        private readonly CancellationTokenSource _stop = new();

        public ConcurrentBag<(DateTimeOffset SentAt, int Http, string Status, string RunId, int? RetryAfter)> Answers { get; } = [];

        public void Stop() => _stop.Cancel();

        public Task RunAsync(int clients) => Task.WhenAll(Enumerable.Range(0, clients).Select(async n =>
        {
            for (var i = n; !_stop.IsCancellationRequested; i++)
            {
                var sent = DateTimeOffset.UtcNow;
                try
                {
                    var (response, body) = await client.RunAsync(requests[i % requests.Length]);
                    Answers.Add((sent, (int)response.StatusCode, body["type"] is not null ? body.Str("type") : body.Str("status"), body.Str("runId"),
                        (int?)response.Headers.RetryAfter?.Delta?.TotalSeconds));
                    if (response.StatusCode is HttpStatusCode.ServiceUnavailable or HttpStatusCode.TooManyRequests)
                        await Task.Delay(500);
                }
                catch (HttpRequestException e)
                {
                    Answers.Add((sent, 0, e.Message, "", null));
                }
            }
        }));
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class FaultCollection
{
    public const string Name = "faults";
}

/// <summary>Pseudo-random bytes made as they are read (never held whole), hashed on the way: a large upload for the test.</summary>
internal sealed class GeneratedContent(int seed, long length) : Stream
{
    private readonly Random _random = new(seed);
    private readonly System.Security.Cryptography.IncrementalHash _hash =
        System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
    private long _position;

    /// <summary>SHA-256 (lower-case hex) of the content, known once all of it was read.</summary>
    public string? Sha256 { get; private set; }

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => length;
    public override long Position { get => _position; set => throw new NotSupportedException(); }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        var count = (int)Math.Min(buffer.Length, length - _position);
        _random.NextBytes(buffer[..count]);
        _hash.AppendData(buffer[..count]);
        _position += count;
        if (_position == length && Sha256 is null)
            Sha256 = Convert.ToHexStringLower(_hash.GetHashAndReset());
        return count;
    }

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => new(Read(buffer.Span));

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        Task.FromResult(Read(buffer.AsSpan(offset, count)));

    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
