using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Docker.DotNet;
using Npgsql;
using Sandbox.Audited.Bench;

// `./sbx bench --scale [events]`: only the record-scale figures, on a database of its own; no service needed.
if (Environment.GetEnvironmentVariable("SBX_BENCH_SCALE") is { Length: > 0 } scale)
    return await RecordScale.RunAsync(
        Environment.GetEnvironmentVariable("SBX_BENCH_ADMIN_CONNECTION") ?? throw new InvalidOperationException("SBX_BENCH_ADMIN_CONNECTION is required."),
        Environment.GetEnvironmentVariable("SBX_BENCH_MIGRATIONS") ?? "migrations", long.Parse(scale, CultureInfo.InvariantCulture),
        Environment.GetEnvironmentVariable("SBX_BENCH_OUT") ?? "bench/results");

// SBX_BENCH_ONLY=dispatch: the run queue's dispatch rate against the engine's churn ceiling, both measured now; no service needed.
if (Environment.GetEnvironmentVariable("SBX_BENCH_ONLY") == "dispatch")
{
    var adminOnly = Environment.GetEnvironmentVariable("SBX_BENCH_ADMIN_CONNECTION") ?? throw new InvalidOperationException("SBX_BENCH_ADMIN_CONNECTION is required.");
    // SBX_BENCH_CHURN=0 leaves the engine alone (profiling the queue only); the ratio then needs a churn figure from another run.
    var churnOnly = double.NaN;
    if (Environment.GetEnvironmentVariable("SBX_BENCH_CHURN") != "0")
    {
        using var dockerOnly = new DockerClientConfiguration(new Uri("unix:///var/run/docker.sock")).CreateClient();
        churnOnly = await new Baselines(dockerOnly, Environment.GetEnvironmentVariable("SBX_BENCH_IMAGE") ?? "sbx-python:current")
            .ChurnCeilingAsync(8, TimeSpan.FromSeconds(10));
    }
    var setting = (string name, int fallback) => int.Parse(Environment.GetEnvironmentVariable(name) ?? fallback.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);
    var dispatchOnly = await Dispatch.MeasureAsync(adminOnly, Environment.GetEnvironmentVariable("SBX_BENCH_MIGRATIONS") ?? "migrations",
        TimeSpan.FromSeconds(setting("SBX_BENCH_DISPATCH_SECONDS", 10)), producers: setting("SBX_BENCH_DISPATCH_PRODUCERS", 8),
        claimers: setting("SBX_BENCH_DISPATCH_CLAIMERS", 8), slotsPerClaimer: setting("SBX_BENCH_DISPATCH_SLOTS", 8));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"dispatch: {dispatchOnly.RunsPerSecond:F0} runs/s ({dispatchOnly.Producers} producers, {dispatchOnly.Claimers} claimers × {dispatchOnly.SlotsPerClaimer} slots); churn ceiling {churnOnly:F2} runs/s; ratio {dispatchOnly.RunsPerSecond / churnOnly:F0}×"));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"  per call, ms p50/p95: enqueue {dispatchOnly.Enqueue.P50:F1}/{dispatchOnly.Enqueue.P95:F1}, claim {dispatchOnly.Claim.P50:F1}/{dispatchOnly.Claim.P95:F1} ({dispatchOnly.RunsPerClaim:F1} runs a claim), finish {dispatchOnly.Finish.P50:F1}/{dispatchOnly.Finish.P95:F1}; CPU per run: {dispatchOnly.ClientCpuMsPerRun:F2} ms in the bench, {dispatchOnly.ServerCpuMsPerRun:F2} ms in PostgreSQL; {dispatchOnly.CommitsPerRun:F2} commits a run"));
    return 0;
}

// Every figure comes from this one run on this machine; compare ratios, not absolute times.
var env = (string name, string? fallback) => Environment.GetEnvironmentVariable(name) ?? fallback
    ?? throw new InvalidOperationException($"{name} is required (run `./sbx bench`).");
var quick = Environment.GetEnvironmentVariable("SBX_BENCH_QUICK") == "1";
var warmUrl = env("SBX_BENCH_URL", "http://127.0.0.1:8080");
var token = env("SBX_BENCH_TOKEN", null);
var servicePid = int.Parse(env("SBX_BENCH_SERVICE_PID", null), CultureInfo.InvariantCulture);

// SBX_BENCH_ONLY=data: only the data-run figures (20 MiB in, 5 MiB artifact out) against SBX_BENCH_URL.
if (Environment.GetEnvironmentVariable("SBX_BENCH_ONLY") == "data")
{
    using var only = Client(warmUrl);
    var data = await DataRuns.MeasureAsync(only, servicePid, quick ? 3 : 10);
    Console.WriteLine(JsonSerializer.Serialize(data));
    return 0;
}

var coldUrl = env("SBX_BENCH_COLD_URL", null);
var admin = env("SBX_BENCH_ADMIN_CONNECTION", null);
var outDir = env("SBX_BENCH_OUT", "bench/results");
var cacheDir = env("SBX_BENCH_CACHE", "/var/cache/sbx-bench");
var image = env("SBX_BENCH_IMAGE", "sbx-python:current");

var latencyRuns = quick ? 30 : 200;
var baselineRuns = quick ? 10 : 50;
var throughputSeconds = quick ? 10 : 60;
var churnSeconds = quick ? 10 : 30;

HttpClient Client(string url)
{
    var client = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromMinutes(2) };
    client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
    return client;
}

var figures = new Dictionary<string, object>();
var latencies = new List<Latency>();
using var docker = new DockerClientConfiguration(new Uri("unix:///var/run/docker.sock")).CreateClient();
var baselines = new Baselines(docker, image);
var warm = new ServiceLoad(Client(warmUrl));
var cold = new ServiceLoad(Client(coldUrl));

// Steady state, not start-up: .NET compiles a method again, optimised, only after ~30 calls and a quiet 100 ms, and the run
// path has many methods called once or twice a run. Ten warm-up runs left it half-optimised (p50 +5-10 ms, measured here).
var warmUpRuns = quick ? 60 : 150;
Console.Error.WriteLine($"[bench] warming up (JIT tiers, connections): {warmUpRuns} runs");
await warm.LatencyAsync(1, warmUpRuns, TimeSpan.FromMilliseconds(100));
await cold.LatencyAsync(1, 3, TimeSpan.Zero);

Console.Error.WriteLine($"[bench] warm latency: {latencyRuns} runs at 1 client, then at 4 clients");
var warm1 = await warm.LatencyAsync(1, latencyRuns, TimeSpan.FromMilliseconds(250));
var warm4 = await warm.LatencyAsync(4, latencyRuns / 4, TimeSpan.FromMilliseconds(1000));
latencies.Add(Latency.Of("warm, 1 client (pooled runs)", warm1.Where(s => s.FromPool).Select(s => s.Ms).ToList()));
latencies.Add(Latency.Of("warm, 4 clients (pooled runs)", warm4.Where(s => s.FromPool).Select(s => s.Ms).ToList()));
latencies.Add(Latency.Of("warm, 4 clients (all runs)", warm4.Select(s => s.Ms).ToList()));
// Where a warm run's time goes: the server's phases (Server-Timing), p50 of each over the pooled runs at 1 client.
var phaseNames = new[] { "admit", "record", "sandbox", "run", "outcome" };
var phases = phaseNames.ToDictionary(p => p, p => Latency.Of(p, warm1.Where(s => s.FromPool && s.Phases.ContainsKey(p)).Select(s => s.Phases[p]).ToList()).P50);
var serverP50 = Latency.Of("server", warm1.Where(s => s.FromPool && s.Phases.Count == phaseNames.Length).Select(s => s.Phases.Values.Sum()).ToList()).P50;
figures["warmPhasesP50"] = phases;
figures["warmPoolHitRate1"] = warm1.Count(s => s.FromPool) / (double)warm1.Count;
figures["warmPoolHitRate4"] = warm4.Count(s => s.FromPool) / (double)warm4.Count;
figures["warmNotSucceeded"] = warm1.Concat(warm4).Count(s => s.Status != "succeeded");

// The cross-node path: an api-only node records each run and an executor of another process (the service's) claims it from
// the run queue, runs it in its warm pool and the api node answers when the run's end is signalled. Interleaved one run at a
// time with the embedded path, so that both see the same machine.
var apiNodeUrl = Environment.GetEnvironmentVariable("SBX_BENCH_API_NODE_URL");
double crossP50 = double.NaN, embeddedBesideP50 = double.NaN;
var crossPhases = new Dictionary<string, double>();
if (apiNodeUrl is { Length: > 0 })
{
    // The cold instance is an executor too: left running it would claim about two thirds of these runs and start a cold
    // container for each. It is stopped (SIGSTOP) for the series, so that the service's warm executor takes every run.
    var coldPid = Environment.GetEnvironmentVariable("SBX_BENCH_COLD_PID");
    if (coldPid is { Length: > 0 })
        await Signal("STOP", coldPid);
    var crossNode = new ServiceLoad(Client(apiNodeUrl));
    await crossNode.LatencyAsync(1, warmUpRuns / 3, TimeSpan.FromMilliseconds(100));
    Console.Error.WriteLine($"[bench] cross-node warm latency: {latencyRuns / 2} runs through an api-only node, interleaved with as many embedded");
    var across = new List<RunSample>();
    var beside = new List<RunSample>();
    for (var i = 0; i < latencyRuns / 2; i++)
    {
        beside.AddRange(await warm.LatencyAsync(1, 1, TimeSpan.FromMilliseconds(250)));
        across.AddRange(await crossNode.LatencyAsync(1, 1, TimeSpan.FromMilliseconds(250)));
    }
    latencies.Add(Latency.Of("warm, 1 client, api-only node → executor of another process (pooled runs)", across.Where(s => s.FromPool).Select(s => s.Ms).ToList()));
    latencies.Add(Latency.Of("warm, 1 client, embedded, interleaved with the series above (pooled runs)", beside.Where(s => s.FromPool).Select(s => s.Ms).ToList()));
    crossP50 = latencies[^2].P50;
    embeddedBesideP50 = latencies[^1].P50;
    figures["crossNodeNotSucceeded"] = across.Concat(beside).Count(s => s.Status != "succeeded");
    figures["crossNodePooled"] = across.Count(s => s.FromPool) / (double)across.Count;
    // Where the cross-node run's time goes, as its api node tells (Server-Timing): the wait for the other node's end, the read.
    crossPhases = new[] { "admit", "record", "elsewhere", "read" }.ToDictionary(p => p,
        p => Latency.Of(p, across.Where(s => s.FromPool && s.Phases.ContainsKey(p)).Select(s => s.Phases[p]).ToList()).P50);
    figures["crossNodePhasesP50"] = crossPhases;
    if (coldPid is { Length: > 0 })
        await Signal("CONT", coldPid);
}

static async Task Signal(string signal, string pid)
{
    using var kill = System.Diagnostics.Process.Start("kill", ["-" + signal, pid]);
    await kill.WaitForExitAsync();
}

Console.Error.WriteLine($"[bench] cold latency (pool disabled): {latencyRuns} runs at 1 client, then at 4 clients");
var cold1 = await cold.LatencyAsync(1, latencyRuns, TimeSpan.Zero);
var cold4 = await cold.LatencyAsync(4, latencyRuns / 4, TimeSpan.Zero);
latencies.Add(Latency.Of("cold, 1 client", cold1.Select(s => s.Ms).ToList()));
latencies.Add(Latency.Of("cold, 4 clients", cold4.Select(s => s.Ms).ToList()));
figures["coldNotSucceeded"] = cold1.Concat(cold4).Count(s => s.Status != "succeeded");

// Runtimes and isolation classes: gVisor (strong) and python-data (import pandas, read a CSV), next to the above.
// Warm figures count pooled runs only: they need Executor__WarmPools__python__strong=1 and
// Executor__WarmPools__python-data__standard=1 on the service; without them the series has 0 runs.
const string PandasCsv = "import sys\nimport pandas as pd\ntable = pd.read_csv(sys.stdin)\nprint(int(table['amount'].sum()))";
const string Csv = "name,amount\nrent,1200\nfood,345\ntravel,80\n";
var runtimeSeries = new (string Name, object Request)[]
{
    ("python print(1), strong (gVisor)", new { language = "python", code = "print(1)", isolation = "strong" }),
    ("python-data pandas CSV, standard", new { language = "python", runtime = "python-data", code = PandasCsv, stdin = Csv }),
    ("python-data pandas CSV, strong (gVisor)", new { language = "python", runtime = "python-data", code = PandasCsv, stdin = Csv, isolation = "strong" }),
};
var runtimeRuns = quick ? 10 : 40;
foreach (var (name, request) in runtimeSeries)
{
    Console.Error.WriteLine($"[bench] {name}: {runtimeRuns} warm and {runtimeRuns} cold runs");
    var warmRuns = await warm.With(request).LatencyAsync(1, runtimeRuns, TimeSpan.FromMilliseconds(1500));
    latencies.Add(Latency.Of($"warm, 1 client, {name} (pooled runs)", warmRuns.Where(s => s.FromPool).Select(s => s.Ms).ToList()));
    var coldRuns = await cold.With(request).LatencyAsync(1, runtimeRuns, TimeSpan.Zero);
    latencies.Add(Latency.Of($"cold, 1 client, {name}", coldRuns.Select(s => s.Ms).ToList()));
    figures[$"notSucceeded: {name}"] = warmRuns.Concat(coldRuns).Count(s => s.Status != "succeeded");
}

Console.Error.WriteLine("[bench] baselines: docker run --rm, Docker API, bare interpreter");
latencies.Add(Latency.Of("baseline: docker run --rm (CLI)", await baselines.DockerCliAsync(baselineRuns / 2)));
var (apiToExit, apiWithRemove) = await baselines.DockerApiAsync(baselineRuns);
latencies.Add(Latency.Of("baseline: Docker API create→start→wait", apiToExit));
latencies.Add(Latency.Of("baseline: Docker API create→start→wait→remove", apiWithRemove));
latencies.Add(Latency.Of("floor: bare interpreter (chroot, no container)", await baselines.BareInterpreterAsync(baselineRuns, cacheDir)));

Console.Error.WriteLine($"[bench] throughput: 8 clients for {throughputSeconds} s, with the audit events counted");
var seqBefore = await ScalarAsync("SELECT coalesce(max(seq_id), 0) FROM sandbox.mt_events");
var throughputWatch = Stopwatch.StartNew();
var (perSecond, completed, notSucceeded) = await warm.ThroughputAsync(8, TimeSpan.FromSeconds(throughputSeconds));
var eventsAppended = await ScalarAsync("SELECT coalesce(max(seq_id), 0) FROM sandbox.mt_events") - seqBefore;
var eventsPerSecond = eventsAppended / throughputWatch.Elapsed.TotalSeconds;
Console.Error.WriteLine($"[bench] churn ceiling: Docker API create/start/wait/remove with 8 workers for {churnSeconds} s");
var churn = await baselines.ChurnCeilingAsync(8, TimeSpan.FromSeconds(churnSeconds));
Console.Error.WriteLine("[bench] dispatch: runs handed from api to executor through the PostgreSQL run queue (executors start no containers)");
var dispatch = await Dispatch.MeasureAsync(admin, env("SBX_BENCH_MIGRATIONS", "migrations"), TimeSpan.FromSeconds(quick ? 5 : 15));

var peakRssMb = PeakRssMb(servicePid);

Console.Error.WriteLine("[bench] data runs: 20 MiB multipart input, 5 MiB artifact, downloaded and checked");
var dataRuns = await DataRuns.MeasureAsync(Client(warmUrl), servicePid, quick ? 3 : 10);

var auditRuns = quick ? 2_000 : 12_500;   // 8 events a run: 100,000 events in the full run
Console.Error.WriteLine($"[bench] audit: {auditRuns * 8} events through the real write path into a bench database, then verify and export");
var audit = await AuditCost.MeasureAsync(admin, env("SBX_BENCH_MIGRATIONS", "migrations"), auditRuns, writers: 8);
latencies.Add(audit.WriteAheadCommit);
latencies.Add(audit.OutcomeCommit);

double P50(string name) => latencies.First(l => l.Name == name).P50;
var warmP50 = P50("warm, 1 client (pooled runs)");
var coldP50 = P50("cold, 1 client");
var apiP50 = P50("baseline: Docker API create→start→wait");
figures["latency"] = latencies;
figures["throughput"] = new { runsPerSecond = perSecond, completed, notSucceeded, churnCeilingPerSecond = churn, ratioToCeiling = perSecond / churn };
figures["dispatch"] = new { dispatch.RunsPerSecond, dispatch.Dispatched, dispatch.Producers, dispatch.Claimers, dispatch.SlotsPerClaimer, churnCeilingPerSecond = churn, ratioToChurnCeiling = dispatch.RunsPerSecond / churn,
    enqueueMs = dispatch.Enqueue, claimMs = dispatch.Claim, finishMs = dispatch.Finish, dispatch.RunsPerClaim, dispatch.ClientCpuMsPerRun, dispatch.ServerCpuMsPerRun,
    dispatch.CommitsPerRun };
figures["audit"] = new { eventsAppendedPerSecond = eventsPerSecond, eventsAppended, bulk = audit };
figures["memory"] = new { servicePeakRssMb = peakRssMb };
figures["dataRuns"] = dataRuns;
figures["ratios"] = new
{
    warmP50VsDockerApi = apiP50 / warmP50,
    coldP50VsDockerApi = coldP50 / apiP50,
    throughputVsChurnCeiling = perSecond / churn,
    dispatchVsChurnCeiling = dispatch.RunsPerSecond / churn,
    crossNodeWarmP50VsEmbedded = crossP50 / embeddedBesideP50,
};
var dockerVersion = (await docker.System.GetVersionAsync()).Version;
var postgresVersion = await ScalarTextAsync("SHOW server_version");
figures["machine"] = new
{
    cores = Environment.ProcessorCount,
    dotnet = Environment.Version.ToString(),
    docker = dockerVersion,
    postgres = postgresVersion,
    date = DateTimeOffset.UtcNow,
    quick,
};

Directory.CreateDirectory(outDir);
// A series with no runs (for example warm gVisor runs on a service without that warm pool) has NaN figures: written as "NaN", not a crash.
var json = JsonSerializer.Serialize(figures, new JsonSerializerOptions
{
    WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase, NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
});
await File.WriteAllTextAsync(Path.Combine(outDir, "latest.json"), json);

var md = new StringBuilder();
md.AppendLine(CultureInfo.InvariantCulture, $"Measured {DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm} UTC on {Environment.ProcessorCount} cores; .NET {Environment.Version}, Docker {dockerVersion}, PostgreSQL {postgresVersion}{(quick ? " (quick mode)" : "")}.");
md.AppendLine();
md.AppendLine("| series (python `print(1)` in the standard class unless named) | runs | p50 ms | p95 ms | p99 ms | mean ms |");
md.AppendLine("|---|---|---|---|---|---|");
foreach (var l in latencies)
    md.AppendLine(l.Row());
md.AppendLine();
md.AppendLine("| figure | value | goal |");
md.AppendLine("|---|---|---|");
md.AppendLine(CultureInfo.InvariantCulture, $"| warm p50 (audit committed) | {warmP50:F1} ms; {apiP50 / warmP50:F1}× faster than the Docker API cold path | ≤ 20 ms, ≥ 10× |");
md.AppendLine(CultureInfo.InvariantCulture, $"| where a warm run's time goes (server, p50 per phase) | admission (body, auth, rate limit, validation) {phases["admit"]:F1} ms, write-ahead commit {phases["record"]:F1} ms, sandbox hand-over {phases["sandbox"]:F1} ms, run in the sandbox {phases["run"]:F1} ms, outcome commit {phases["outcome"]:F1} ms; sum p50 {serverP50:F1} ms, the rest is HTTP, writing the answer and the client | |");
md.AppendLine(CultureInfo.InvariantCulture, $"| cross-node warm p50 (api-only node, executor in another process) / embedded warm p50, interleaved | {crossP50:F1} / {embeddedBesideP50:F1} ms = {crossP50 / embeddedBesideP50:F2}× | ≤ 1.2× |");
md.AppendLine(CultureInfo.InvariantCulture, $"| cross-node phases p50 (api node's Server-Timing): {string.Join(", ", crossPhases.Select(p => $"{p.Key} {p.Value:F1}"))} ms | | |");
md.AppendLine(CultureInfo.InvariantCulture, $"| warm pool hit rate (1 / 4 clients) | {(double)figures["warmPoolHitRate1"]:P0} / {(double)figures["warmPoolHitRate4"]:P0} | |");
md.AppendLine(CultureInfo.InvariantCulture, $"| cold p50 / Docker API create→start→wait p50 | {coldP50 / apiP50:F2}× | ≤ 1.2× |");
md.AppendLine(CultureInfo.InvariantCulture, $"| throughput, 8 clients, {throughputSeconds} s | {perSecond:F2} runs/s ({completed} ok, {notSucceeded} not ok) | |");
md.AppendLine(CultureInfo.InvariantCulture, $"| Docker churn ceiling, 8 workers | {churn:F2} runs/s; service reaches {perSecond / churn:P0} | ≥ 90% |");
md.AppendLine(CultureInfo.InvariantCulture, $"| dispatch: runs handed api → executor through the run queue, write-ahead and terminal events included ({dispatch.Producers} producers, {dispatch.Claimers} claimers × {dispatch.SlotsPerClaimer} slots, no containers) | {dispatch.RunsPerSecond:F0} runs/s; {dispatch.RunsPerSecond / churn:F0}× the churn ceiling | ≥ 100× |");
md.AppendLine(CultureInfo.InvariantCulture, $"| audit events appended under that load | {eventsPerSecond:F0} events/s | |");
md.AppendLine(CultureInfo.InvariantCulture, $"| audit write path alone (8 writers, 2 commits a run) | {audit.AppendEventsPerSecond:F0} events/s over {audit.EventsSeeded} events | |");
md.AppendLine(CultureInfo.InvariantCulture, $"| verification | {audit.VerifyEventsPerSecond:F0} events/s over {audit.EventsVerified} events (verified: {audit.Verified}) | ≥ 50,000 events/s |");
md.AppendLine(CultureInfo.InvariantCulture, $"| export (NDJSON) | {audit.ExportEventsPerSecond:F0} events/s, {audit.ExportedBytes / 1048576.0:F1} MiB for {audit.ExportedEvents} events | |");
md.AppendLine(CultureInfo.InvariantCulture, $"| service peak resident memory | {peakRssMb:F0} MB | ≤ 300 MB |");
md.AppendLine(CultureInfo.InvariantCulture, $"| data run: 20 MiB multipart input, 5 MiB artifact (downloaded, Repr-Digest checked: {dataRuns.AllIdentical}) | p50 {dataRuns.P50Ms:F0} ms, {dataRuns.RunsPerSecond:F2} runs/s, {dataRuns.InputMiBPerSecond:F1} MiB/s of input; service RSS {dataRuns.ServiceRssBeforeMb:F0} → peak {dataRuns.ServiceRssPeakMb:F0} MB | RSS rise well under the input size |");
await File.WriteAllTextAsync(Path.Combine(outDir, "latest.md"), md.ToString());
Console.WriteLine(md.ToString());
return 0;

async Task<long> ScalarAsync(string sql)
{
    await using var connection = new NpgsqlConnection(admin);
    await connection.OpenAsync();
    await using var command = new NpgsqlCommand(sql, connection);
    return Convert.ToInt64(await command.ExecuteScalarAsync(), CultureInfo.InvariantCulture);
}

async Task<string> ScalarTextAsync(string sql)
{
    await using var connection = new NpgsqlConnection(admin);
    await connection.OpenAsync();
    await using var command = new NpgsqlCommand(sql, connection);
    return (await command.ExecuteScalarAsync())?.ToString() ?? "";
}

static double PeakRssMb(int pid)
{
    var line = File.ReadLines($"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
    return line is null ? double.NaN : double.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024;
}
