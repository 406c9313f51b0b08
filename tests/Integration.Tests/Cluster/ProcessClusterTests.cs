using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using Sandbox.Audited.Tests.Faults;
using Sandbox.Audited.Tests.Infrastructure;
using Xunit.Abstractions;
using AuthRoles = Sandbox.Audited.Domain.Runs.Roles;

namespace Sandbox.Audited.Tests.Cluster;

/// <summary>
/// Two api and two executor processes on one database, driven through the public HTTP API of the api nodes and checked
/// in the database: runs spread over both executors, an executor killed mid-run, every node restarted in turn under
/// load, output streamed across nodes, and the async daemon's leadership failing over. Each test prints its figures.
/// </summary>
[Collection(ProcessClusterCollection.Name)]
public sealed class ProcessClusterTests(ProcessCluster cluster, ITestOutputHelper output) : IAsyncLifetime
{
    private static readonly string[] Terminal = ["run_completed", "run_failed", "run_abandoned"];

    public Task InitializeAsync() => cluster.EnsureAllUpAsync();

    public Task DisposeAsync() => Task.CompletedTask;

    [Fact]
    public async Task RunsSpreadOverBothExecutorsAndNeverRunOnAnApiNode()
    {
        // Twelve runs at once from three tenants, alternating api nodes: both executors must be claiming. One executor has
        // 8 slots, so at least four runs wait for the other. Three tenants of four runs each: with one tenant, its
        // cluster-wide ceiling of 6 would be the limit instead, and the executor holding the tenant's six runs would claim
        // each next one the moment a slot frees, before the other's poll (seen on a fresh CI machine: 12 on one executor).
        // Each run lasts 2 s, so a wait of one poll (1 s) on a loaded machine still finds runs to claim.
        var runners = Enumerable.Range(0, 3).SelectMany(t => new[] { cluster.Api(0).Runner("ada", $"tenant-spread-{t}"), cluster.Api(1).Runner("ada", $"tenant-spread-{t}") }).ToList();
        var answers = await Task.WhenAll(Enumerable.Range(0, 12).Select(i => runners[i % runners.Count].RunAsync(new { language = "shell", code = "sleep 2; echo ok" })));
        runners.ForEach(r => r.Dispose());

        Assert.All(answers, a => Assert.Equal((HttpStatusCode.OK, "succeeded", "ok\n"), (a.Response.StatusCode, a.Body.Str("status"), a.Body.Str("stdout.content"))));
        var nodes = await NodesThatRanAsync(answers.Select(a => Guid.Parse(a.Body.Str("runId"))));
        output.WriteLine("runs per node: " + string.Join(", ", nodes.GroupBy(n => n).Select(g => $"{g.Key}: {g.Count()}")));
        Assert.Equal(12, nodes.Count);
        Assert.Equal(cluster.Executors.Select(e => e.Id).Order(), nodes.Distinct().Order());
        // An api node's answer says where the time went on its side: the write-ahead commit, the wait for another node to end
        // the run, the read of its record.
        Assert.All(answers, a => Assert.Equal(["admit", "record", "elsewhere", "read"],
            a.Response.Headers.GetValues("Server-Timing").Single().Split(", ").Select(metric => metric.Split(";dur=")[0])));
    }

    [Fact]
    public async Task AnExecutorKilledMidRunHasItsRunsAbandonedNamingItWhileTheOtherKeepsServing()
    {
        const string tenant = "tenant-executor-kill";
        using var runner = cluster.Api(0).Runner("bob", tenant);
        var since = DateTimeOffset.UtcNow.AddSeconds(-1);

        // Six runs of 15 s: long enough to be mid-run on both executors when one is killed.
        var runs = new List<Guid>();
        for (var i = 0; i < 6; i++)
        {
            var (accepted, body) = await runner.RunAsync(new { language = "shell", code = "echo started; sleep 15; echo done", wait = false, limits = new { timeoutMs = 40000 } });
            Assert.Equal(HttpStatusCode.Accepted, accepted.StatusCode);
            runs.Add(Guid.Parse(body.Str("runId")));
        }
        Dictionary<Guid, string> placed = [];
        await Eventually.WaitUntilAsync(async () => (placed = await PlacementAsync(runs)).Count == runs.Count,
            () => $"only {placed.Count} of {runs.Count} runs got a sandbox", TimeSpan.FromSeconds(60), pollMs: 100);
        var victim = cluster.Executors.OrderByDescending(e => placed.Values.Count(n => n == e.Id)).First();
        var survivor = cluster.Executors.First(e => e != victim);
        await victim.CrashAsync();
        var killed = Stopwatch.StartNew();
        // Read after the kill, so exact: the victim's runs that had not ended (on a busy machine some may have).
        var endedBefore = await TerminalsAsync(runs);
        var doomed = placed.Where(p => p.Value == victim.Id && !endedBefore.ContainsKey(p.Key)).Select(p => p.Key).ToList();

        // The other executor keeps serving while the dead one's runs wait out lease and grace.
        using var other = cluster.Api(1).Runner("bob", tenant);
        var during = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => other.RunAsync(new { language = "python", code = "print('alive')" })));
        Assert.All(during, a => Assert.Equal((HttpStatusCode.OK, "succeeded"), (a.Response.StatusCode, a.Body.Str("status"))));
        Assert.All((await NodesThatRanAsync(during.Select(a => Guid.Parse(a.Body.Str("runId"))))), n => Assert.Equal(survivor.Id, n));

        await Eventually.WaitUntilAsync(async () => (await TerminalsAsync(runs)).Count == runs.Count,
            () => "not every run ended: " + string.Join(", ", runs.Select(r => r.ToString("N")[..8])), TimeSpan.FromSeconds(60), pollMs: 250);
        var abandonedAfter = killed.Elapsed;
        var terminals = await TerminalsAsync(runs);
        foreach (var run in runs)
        {
            var (type, node) = terminals[run];
            if (doomed.Contains(run))
                Assert.Equal(("run_abandoned", victim.Id), (type, node));
            else
                Assert.Equal("run_completed", type);
        Assert.NotEmpty(doomed);
        }

        // The killed node returns, reaps its orphaned sandboxes and records their removal; then the record is whole.
        await victim.StartAsync();
        await victim.WaitReadyAsync();
        await Eventually.WaitUntilAsync(async () => await cluster.Database.ScalarAsync<long>(
                "SELECT count(*) FROM sandbox.mt_events WHERE type = 'sandbox_removed' AND stream_id = ANY($1)", doomed.ToArray()) == doomed.Count,
            () => "the returned executor did not record the removal of its orphaned sandboxes", TimeSpan.FromSeconds(30), pollMs: 250);
        output.WriteLine($"killed {victim.Id} with {doomed.Count} of {runs.Count} runs in its sandboxes; all {runs.Count} ended {abandonedAfter.TotalSeconds:F1} s after the kill " +
            $"(lease {ProcessCluster.QueueSettings["Queue__LeaseSeconds"]} s + grace {ProcessCluster.QueueSettings["Queue__AbandonGraceSeconds"]} s)");
        Assert.Empty(await RunsExecutedMoreThanOnceAsync());
        var violations = await FaultInvariants.CheckRecordAsync(cluster.Database, cluster.Nodes.Select(n => n.Id), since, [tenant]);
        Assert.True(violations.Count == 0, string.Join("\n", violations));
    }

    [Fact]
    public async Task EveryNodeRestartsInTurnUnderLightLoadWithoutAFailedRequest()
    {
        const string tenant = "tenant-rolling";
        var since = DateTimeOffset.UtcNow.AddSeconds(-1);
        var load = new RollingLoad(cluster, "carla", tenant);
        var loading = load.RunAsync(clients: 3);
        await Task.Delay(TimeSpan.FromSeconds(2));

        var restarts = new List<string>();
        foreach (var node in cluster.Nodes)
        {
            var timer = Stopwatch.StartNew();
            // As a load balancer does once readiness turns 503: no new requests to a node that is going away.
            load.OutOfRotation(node);
            await node.StopAsync();
            var stopped = timer.Elapsed;
            await node.StartAsync();
            await node.WaitReadyAsync();
            load.InRotation(node);
            restarts.Add($"{node.Id} down {stopped.TotalSeconds:F1} s, ready again after {timer.Elapsed.TotalSeconds:F1} s");
            await Task.Delay(TimeSpan.FromSeconds(1));
        }
        load.Stop();
        await loading;

        output.WriteLine(string.Join("; ", restarts));
        output.WriteLine($"requests by status: {FaultInvariants.Figures(load.Answers.Select(a => (a.Http, a.Status)))}");
        // Documented: an api node that has begun draining may answer 503 with Retry-After; nothing else may fail.
        Assert.All(load.Answers, a => Assert.True((a.Http, a.Status) == (200, "succeeded") || (a.Http == 503 && a.RetryAfter is > 0),
            $"request failed: {a.Http} {a.Status}"));
        Assert.True(load.Answers.Count(a => a.Http == 200) >= 10, "the load hardly ran");
        var answered = load.Answers.Where(a => a.Http == 200).Select(a => Guid.Parse(a.RunId)).ToList();
        var terminals = await TerminalsAsync(answered);
        Assert.All(answered, run => Assert.Equal("run_completed", terminals.GetValueOrDefault(run).Type));
        Assert.Empty(await RunsExecutedMoreThanOnceAsync());
        var violations = await FaultInvariants.CheckRecordAsync(cluster.Database, cluster.Nodes.Select(n => n.Id), since, [tenant]);
        Assert.True(violations.Count == 0, string.Join("\n", violations));
    }

    [Fact]
    public async Task AClientOfOneApiNodeSeesOutputLiveWhileAnotherNodesExecutorRunsIt()
    {
        const string tenant = "tenant-cross-stream";
        using var viaA = cluster.Api(0).Runner("dora", tenant);
        using var viaB = cluster.Api(1).Runner("dora", tenant);
        // tick1 comes a second after the start, once node B follows the run: a follower sees live what is produced after it
        // joined; what came before reaches it with the recorded output at the end (only the recording node keeps it).
        var (accepted, body) = await viaA.RunAsync(new { language = "shell", code = "sleep 1; echo tick1; sleep 3; echo tick2", wait = false });
        Assert.Equal(HttpStatusCode.Accepted, accepted.StatusCode);
        var runId = body.Str("runId");

        var clock = Stopwatch.StartNew();
        using var response = await viaB.GetAsync($"/v1/runs/{runId}/stream", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var received = await ServerSentEvents.ReadUntilEndAsync(response, clock);

        var firstTick = received.FirstOrDefault(r => r.Event == "stdout" && r.Data.Contains("tick1", StringComparison.Ordinal));
        var end = received.Single(r => r.Event == "end");
        output.WriteLine(string.Join("\n", received.Select(r => $"{r.At.TotalSeconds,6:F2} s {r.Event}")));
        Assert.NotNull(firstTick.Event);
        Assert.Contains("succeeded", end.Data, StringComparison.Ordinal);
        // tick1 is printed 3 s before the run ends: seen live, it arrives well before the end, not with the recorded output.
        Assert.True(end.At - firstTick.At > TimeSpan.FromSeconds(1.5),
            $"tick1 arrived at {firstTick.At.TotalSeconds:F2} s, the end at {end.At.TotalSeconds:F2} s: the output did not cross nodes live");
    }

    [Fact]
    public async Task TheAsyncDaemonRunsOnOneNodeAtATimeAndFailsOverWhenItsLeaderIsKilled()
    {
        const string tenant = "tenant-daemon";
        // HotCold: the daemon's leadership is a PostgreSQL advisory lock, held by exactly one node's connection.
        List<string> holders = [];
        await Eventually.WaitUntilAsync(async () => (holders = await cluster.AdvisoryLockHoldersAsync()).Count == 1,
            () => $"expected one daemon leader, found [{string.Join(", ", holders)}]", TimeSpan.FromSeconds(30), pollMs: 250);
        var leader = cluster.Nodes.Single(n => n.Id == holders[0]);

        await RunThroughNodesAvoidingAsync(leader, tenant, count: 3);
        await WaitForStatisticsAsync(tenant, runs: 3);
        output.WriteLine($"PostgreSQL connections per node: {await cluster.ConnectionsPerNodeAsync()}");

        await leader.CrashAsync();
        var killed = Stopwatch.StartNew();
        await Eventually.WaitUntilAsync(async () => (holders = await cluster.AdvisoryLockHoldersAsync()).Count == 1 && holders[0] != leader.Id,
            () => $"no node took over the daemon after {leader.Id} was killed: holders [{string.Join(", ", holders)}]", TimeSpan.FromSeconds(60), pollMs: 250);
        var takenOver = killed.Elapsed;
        var progressionBefore = await ProgressionAsync();

        await RunThroughNodesAvoidingAsync(leader, tenant, count: 3);
        await WaitForStatisticsAsync(tenant, runs: 6);
        var advanced = killed.Elapsed;
        output.WriteLine($"daemon leader {leader.Id} killed; {holders[0]} held the lock after {takenOver.TotalSeconds:F1} s; " +
            $"statistics counted the next 3 runs {advanced.TotalSeconds:F1} s after the kill; progression {progressionBefore} → {await ProgressionAsync()}");
        Assert.True(await ProgressionAsync() > progressionBefore, "the daemon's progression did not advance after the failover");
    }

    private async Task RunThroughNodesAvoidingAsync(ClusterNode avoid, string tenant, int count)
    {
        using var runner = cluster.ApiNodes.First(n => n != avoid).Runner("erik", tenant);
        for (var i = 0; i < count; i++)
        {
            var (response, body) = await runner.RunAsync(new { language = "python", code = "print(1)" });
            Assert.Equal((HttpStatusCode.OK, "succeeded"), (response.StatusCode, body.Str("status")));
        }
    }

    private Task WaitForStatisticsAsync(string tenant, int runs) =>
        Eventually.WaitUntilAsync(async () => await cluster.Database.ScalarAsync<long>(
                "SELECT coalesce(sum((data ->> 'completed')::int), 0) FROM sandbox.mt_doc_rundailystatistics WHERE data ->> 'tenant' = $1", tenant) == runs,
            () => $"the daily statistics of {tenant} never counted {runs} completed runs", TimeSpan.FromSeconds(60), pollMs: 250);

    private Task<long> ProgressionAsync() =>
        cluster.Database.ScalarAsync<long>("SELECT coalesce(max(last_seq_id), 0) FROM sandbox.mt_event_progression WHERE name LIKE 'run_daily_statistics%'");

    /// <summary>The node each run's sandbox was created on (runs without one yet are left out).</summary>
    private async Task<Dictionary<Guid, string>> PlacementAsync(IEnumerable<Guid> runs)
    {
        var placed = new Dictionary<Guid, string>();
        await using var data = Npgsql.NpgsqlDataSource.Create(cluster.Database.AdminConnection);
        await using var command = data.CreateCommand("SELECT stream_id, data ->> 'node' FROM sandbox.mt_events WHERE type = 'sandbox_created' AND stream_id = ANY($1)");
        command.Parameters.AddWithValue(runs.ToArray());
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
            placed[reader.GetGuid(0)] = reader.GetString(1);
        return placed;
    }

    private async Task<List<string>> NodesThatRanAsync(IEnumerable<Guid> runs) => (await PlacementAsync(runs)).Values.ToList();

    /// <summary>Each ended run's terminal event type and, for an abandonment, the node it names.</summary>
    private async Task<Dictionary<Guid, (string Type, string Node)>> TerminalsAsync(IEnumerable<Guid> runs)
    {
        var ended = new Dictionary<Guid, (string, string)>();
        await using var data = Npgsql.NpgsqlDataSource.Create(cluster.Database.AdminConnection);
        await using var command = data.CreateCommand("SELECT stream_id, type, coalesce(data ->> 'node', '') FROM sandbox.mt_events WHERE type = ANY($2) AND stream_id = ANY($1)");
        command.Parameters.AddWithValue(runs.ToArray());
        command.Parameters.AddWithValue(Terminal);
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
            ended[reader.GetGuid(0)] = (reader.GetString(1), reader.GetString(2));
        return ended;
    }

    /// <summary>At most once: no run may have had two sandboxes started (two executors, or one twice).</summary>
    private async Task<List<Guid>> RunsExecutedMoreThanOnceAsync()
    {
        var twice = new List<Guid>();
        await using var data = Npgsql.NpgsqlDataSource.Create(cluster.Database.AdminConnection);
        await using var command = data.CreateCommand("SELECT stream_id FROM sandbox.mt_events WHERE type = 'sandbox_started' GROUP BY stream_id HAVING count(*) > 1");
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
            twice.Add(reader.GetGuid(0));
        return twice;
    }

    /// <summary>Clients sending short runs back to back to the api nodes in rotation, as behind a load balancer.</summary>
    private sealed class RollingLoad(ProcessCluster cluster, string subject, string tenant)
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly ConcurrentDictionary<ClusterNode, bool> _out = new();

        public ConcurrentBag<(int Http, string Status, string RunId, int? RetryAfter)> Answers { get; } = [];

        public void OutOfRotation(ClusterNode node) => _out[node] = true;

        public void InRotation(ClusterNode node) => _out.TryRemove(node, out _);

        public void Stop() => _stop.Cancel();

        public Task RunAsync(int clients) => Task.WhenAll(Enumerable.Range(0, clients).Select(async n =>
        {
            var token = cluster.Token(subject, tenant, AuthRoles.Runner);
            for (var i = n; !_stop.IsCancellationRequested; i++)
            {
                var nodes = cluster.ApiNodes.Where(a => !_out.ContainsKey(a)).ToList();
                using var client = nodes[i % nodes.Count].Client(token);
                try
                {
                    var (response, body) = await client.RunAsync(new { language = "shell", code = "sleep 0.3; echo ok" });
                    Answers.Add(((int)response.StatusCode, body["type"] is not null ? body.Str("type") : body.Str("status"), body.Str("runId"),
                        (int?)response.Headers.RetryAfter?.Delta?.TotalSeconds));
                    if (response.StatusCode is HttpStatusCode.ServiceUnavailable or HttpStatusCode.TooManyRequests)
                        await Task.Delay(500);
                }
                catch (HttpRequestException e)
                {
                    Answers.Add((0, e.Message, "", null));
                }
            }
        }));
    }
}
