using System.Diagnostics;
using System.Text;
using Marten;
using Npgsql;
using Sandbox.Audited.Audit;
using Sandbox.Audited.Audit.Migrations;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Audit.Queue;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Bench;

/// <summary>Runs handed from api to executor per second through the PostgreSQL run queue, by the real RunQueue code.</summary>
public sealed record DispatchFigures(double RunsPerSecond, long Dispatched, int Producers, int Claimers, int SlotsPerClaimer, double Seconds,
    Latency Enqueue, Latency Claim, Latency Finish, double RunsPerClaim, double ClientCpuMsPerRun, double ServerCpuMsPerRun,
    double CommitsPerRun = double.NaN);

/// <summary>
/// The coordinator's ceiling: api-side producers record runs with the write-ahead commit's own code (the request, decision and
/// run_queued events chained and hashed through RunStream, the inputs staged, the queue row), while executors that start no
/// containers claim as many as they have free slots in one call (FOR UPDATE SKIP LOCKED, tenant ceiling checked), resume each
/// run's stream from the record and commit its terminal event with the row's end, as the outcome commit does. Commits made at
/// the same moment share a transaction (GroupCommit) as they do in the service. On a database of its own.
/// </summary>
public static class Dispatch
{
    public static async Task<DispatchFigures> MeasureAsync(string adminConnection, string migrations, TimeSpan duration, int producers = 8, int claimers = 8, int slotsPerClaimer = 8)
    {
        var database = "sbx_bench_" + Guid.NewGuid().ToString("N")[..8];
        await ExecuteAsync(adminConnection, $"CREATE DATABASE {database} OWNER sandbox_owner");
        var connection = new NpgsqlConnectionStringBuilder(adminConnection) { Database = database, MaxPoolSize = 50 }.ConnectionString;
        try
        {
            await MigrationRunner.ApplyAsync(connection, migrations, TextWriter.Null, CancellationToken.None);
            if (Environment.GetEnvironmentVariable("SBX_BENCH_LOG") == "1")
                await ExecuteAsync(adminConnection, $"ALTER DATABASE {database} SET log_statement = 'all'");
            // Each node as the service builds it: its own document store (and so its own group commit), data source and run
            // queue (and so its own merged wake-ups). One api node takes every producer's requests; each executor is a node.
            var groupCommits = Environment.GetEnvironmentVariable("SBX_BENCH_GROUP_COMMIT") != "0"; // 0: every commit alone, as before
            var nodes = new List<Node>();
            Node NewNode(int poolSize)
            {
                var pooled = new NpgsqlConnectionStringBuilder(connection) { MaxPoolSize = poolSize }.ConnectionString;
                var store = DocumentStore.For(o => MartenSetup.Configure(o, pooled));
                GroupCommit.For(store).Enabled = groupCommits;
                if (Environment.GetEnvironmentVariable("SBX_BENCH_GROUP_IN_FLIGHT") is { Length: > 0 } inFlight)
                    GroupCommit.For(store).InFlight = int.Parse(inFlight, System.Globalization.CultureInfo.InvariantCulture);
                var source = NpgsqlDataSource.Create(pooled);
                // SBX_BENCH_PREPARED=0: commits on Marten's own connections (DISCARD ALL at every return), as before.
                var commits = Environment.GetEnvironmentVariable("SBX_BENCH_PREPARED") == "0" ? null : NpgsqlDataSource.Create(Prepared.ConnectionString(pooled));
                GroupCommit.For(store).Connections = commits;
                var node = new Node(store, source, new RunQueue(source), commits);
                nodes.Add(node);
                return node;
            }
            var api = NewNode(30);
            var executors = Enumerable.Range(0, claimers).Select(_ => NewNode(slotsPerClaimer + 6)).ToList();
            long Commits() => nodes.Sum(n => GroupCommit.For(n.Store).Alone + GroupCommit.For(n.Store).Shared);
            // At most this many runs wait at once, as admission bounds the queue; producers wait for room.
            using var room = new SemaphoreSlim(512, 512);
            using var stop = new CancellationTokenSource();
            long dispatched = 0;
            // Where a hand-over's time goes: each commit as its caller sees it (the wake-up after it included).
            var measuring = false;
            var enqueueMs = new System.Collections.Concurrent.ConcurrentBag<double>();
            var claimMs = new System.Collections.Concurrent.ConcurrentBag<double>();
            var finishMs = new System.Collections.Concurrent.ConcurrentBag<double>();
            long claims = 0, claimedRuns = 0;
            var limits = new RunLimits(10000, 128, 1, 64, 65536, 16);

            async Task ProduceAsync(int producer)
            {
                var caller = new Caller("bench", "bench-tenant-" + producer, ["runner"]);
                var client = new ClientInfo("127.0.0.1", "bench", null, null);
                var request = new ValidRunRequest("python", "print(1)", [], [], [], RequestedLimits.None, "internal", "python", "standard");
                var decision = new PolicyDecision(Decision.Allow, new string('c', 64), ["runners-default"], limits, [], []);
                ReadOnlyMemory<byte>[] staged = [Encoding.UTF8.GetBytes(request.Code), request.Stdin];
                while (!stop.IsCancellationRequested)
                {
                    try
                    {
                        await room.WaitAsync(stop.Token);
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }
                    var runId = Guid.CreateVersion7();
                    var started = Stopwatch.GetTimestamp();
                    // The write-ahead commit as the api node makes it: the request, the decision and run_queued (chained and
                    // hashed), the inputs staged, and the queue row, in one commit through RunStream.
                    var now = DateTimeOffset.UtcNow;
                    var work = new RunWork(runId,
                        new QueuedRequest("python", Sha256Hex.Of(staged[0].Span), staged[0].Length, Sha256Hex.Of(request.Stdin), 0, [], [], RequestedLimits.None,
                            "internal", "python", "standard"),
                        decision, caller, null, null);
                    var stream = new RunStream(api.Store, runId, new WriteContext(caller.Subject, null, Tenant: caller.Tenant));
                    object[] events = [.. RunDecisions.Request(runId, caller, client, request, [], decision, "bench-api", 0, now), RunDecisions.Queued(runId, "bench-api", null, now)];
                    await stream.AppendAsync(events, CancellationToken.None, session =>
                    {
                        EvidenceStore.Stage(session, caller.Tenant, staged);
                        api.Queue.Enqueue(session, work, caller.Tenant, "bench-api", null, 30);
                    });
                    if (Volatile.Read(ref measuring))
                        enqueueMs.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                }
            }

            async Task ClaimAsync(int claimer)
            {
                // An executor node as QueueWorker runs one: woken by its LISTEN connection ("a run was queued"), by the poll, or
                // by a slot coming free while queued runs may wait for one (ClaimPacing); each round claims as many runs as it
                // has free slots, in one call.
                var node = "bench-executor-" + claimer;
                var executor = executors[claimer];
                using var slots = new SemaphoreSlim(slotsPerClaimer, slotsPerClaimer);
                using var wake = new SemaphoreSlim(1, 1);
                var finishing = new List<Task>();
                await using var listener = await executor.Source.OpenConnectionAsync();
                var pacing = new ClaimPacing();
                listener.Notification += (_, _) =>
                {
                    pacing.Announced();
                    Wake(wake);
                };
                await using (var listen = new NpgsqlCommand($"LISTEN {RunQueue.QueuedChannel}", listener))
                    await listen.ExecuteNonQueryAsync();
                var listening = ListenAsync(listener, stop.Token);
                while (!stop.IsCancellationRequested)
                {
                    try
                    {
                        await wake.WaitAsync(TimeSpan.FromSeconds(1), stop.Token);
                    }
                    catch (OperationCanceledException)
                    {
                        break;
                    }
                    while (true)
                    {
                        var free = 0;
                        while (slots.Wait(0))
                            free++;
                        if (free == 0)
                            break;
                        var started = Stopwatch.GetTimestamp();
                        var mark = pacing.Mark();
                        var claim = await executor.Queue.ClaimReportingAsync(node, 1_000_000, 30, free, CancellationToken.None);
                        var claimed = claim.Runs;
                        pacing.Claimed(mark, free, claimed.Count, claim.LeftBehind);
                        if (Volatile.Read(ref measuring))
                        {
                            claimMs.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                            Interlocked.Increment(ref claims);
                            Interlocked.Add(ref claimedRuns, claimed.Count);
                        }
                        if (free - claimed.Count > 0)
                            slots.Release(free - claimed.Count);
                        foreach (var run in claimed)
                            finishing.Add(FinishAsync(executor, run, slots, wake, pacing));
                        finishing.RemoveAll(t => t.IsCompleted);
                        if (claimed.Count < free)
                            break;
                    }
                }
                await Task.WhenAll(finishing);
                await listening;
            }

            async Task FinishAsync(Node executor, ClaimedRun run, SemaphoreSlim slots, SemaphoreSlim wake, ClaimPacing pacing)
            {
                await Task.Yield();
                var started = Stopwatch.GetTimestamp();
                // The executor's side of a run another node recorded: its stream resumed from the record, then the terminal
                // event and the row's end in one commit, as the outcome commit makes them (a run that starts no container).
                var runId = run.Work.RunId;
                var stream = await RunStream.ResumeAsync(executor.Store, runId, new WriteContext(run.Work.Caller.Subject, run.Work.CorrelationId, Tenant: run.Tenant),
                    CancellationToken.None);
                await stream.AppendAsync([new RunCompleted(runId, RunStatus.Succeeded, 0, 1, null, DateTimeOffset.UtcNow)], CancellationToken.None,
                    session => executor.Queue.Finish(session, runId));
                if (Volatile.Read(ref measuring))
                    finishMs.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                Interlocked.Increment(ref dispatched);
                room.Release();
                slots.Release();
                if (pacing.WorthClaimingForFreeSlot)
                    Wake(wake);
            }

            // Warm-up: connections, statements, the claim function's plan, and the JIT's tiers (a service runs for days).
            var warm = Task.WhenAll(Enumerable.Range(0, producers).Select(ProduceAsync).Concat(Enumerable.Range(0, claimers).Select(ClaimAsync)));
            await Task.Delay(TimeSpan.FromSeconds(3));
            // CPU spent per run, by this process (the api and executor sides) and by its database's backends: on a machine shared
            // with other work, steadier than the rate.
            var backends = await BackendsAsync(connection, database);
            var serverBefore = CpuTicks(backends);
            var clientBefore = Process.GetCurrentProcess().TotalProcessorTime;
            var commitsBefore = Commits();
            var before = Interlocked.Read(ref dispatched);
            Volatile.Write(ref measuring, true);
            var watch = Stopwatch.StartNew();
            await Task.Delay(duration);
            var count = Interlocked.Read(ref dispatched) - before;
            var seconds = watch.Elapsed.TotalSeconds;
            var clientCpu = (Process.GetCurrentProcess().TotalProcessorTime - clientBefore).TotalMilliseconds;
            var serverCpu = (CpuTicks(backends) - serverBefore) * 1000.0 / 100; // USER_HZ
            var commits = Commits() - commitsBefore;
            Volatile.Write(ref measuring, false);
            stop.Cancel();
            await warm;
            foreach (var node in nodes)
            {
                await node.Queue.DisposeAsync();
                node.Store.Dispose();
                await node.Source.DisposeAsync();
                if (node.Commits is not null)
                    await node.Commits.DisposeAsync();
            }
            return new DispatchFigures(count / seconds, count, producers, claimers, slotsPerClaimer, seconds,
                Latency.Of("enqueue", enqueueMs), Latency.Of("claim", claimMs), Latency.Of("finish", finishMs),
                claims == 0 ? 0 : (double)claimedRuns / claims, clientCpu / Math.Max(1, count), serverCpu / Math.Max(1, count),
                (double)commits / Math.Max(1, count));
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            if (Environment.GetEnvironmentVariable("SBX_BENCH_KEEP") == "1")
                Console.Error.WriteLine($"[dispatch] kept database {database} (SBX_BENCH_KEEP=1); drop it when done");
            else
                await ExecuteAsync(adminConnection, $"DROP DATABASE IF EXISTS {database} WITH (FORCE)");
        }
    }

    private sealed record Node(DocumentStore Store, NpgsqlDataSource Source, RunQueue Queue, NpgsqlDataSource? Commits);

    private static async Task<int[]> BackendsAsync(string connectionString, string database)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT pid FROM pg_stat_activity WHERE datname = $1", connection);
        command.Parameters.AddWithValue(database);
        var pids = new List<int>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
            pids.Add(reader.GetInt32(0));
        return [.. pids];
    }

    /// <summary>User and system time of these processes in clock ticks (0 for one that is gone or not readable).</summary>
    private static long CpuTicks(int[] pids) => pids.Sum(pid =>
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return long.Parse(fields[11], System.Globalization.CultureInfo.InvariantCulture) + long.Parse(fields[12], System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (IOException)
        {
            return 0L;
        }
    });

    private static void Wake(SemaphoreSlim wake)
    {
        try
        {
            wake.Release();
        }
        catch (SemaphoreFullException)
        {
            // already awake
        }
    }

    private static async Task ListenAsync(NpgsqlConnection listener, CancellationToken ct)
    {
        try
        {
            while (!ct.IsCancellationRequested)
                await listener.WaitAsync(ct);
        }
        catch (OperationCanceledException)
        {
        }
    }

    private static async Task ExecuteAsync(string connectionString, string sql)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }
}
