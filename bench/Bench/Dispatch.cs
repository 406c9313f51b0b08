using System.Diagnostics;
using Marten;
using Npgsql;
using Sandbox.Audited.Audit;
using Sandbox.Audited.Audit.Migrations;
using Sandbox.Audited.Audit.Queue;
using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Bench;

/// <summary>Runs handed from api to executor per second through the PostgreSQL run queue, by the real RunQueue code.</summary>
public sealed record DispatchFigures(double RunsPerSecond, long Dispatched, int Producers, int Claimers, int SlotsPerClaimer, double Seconds);

/// <summary>
/// The coordinator's ceiling: api-side producers enqueue runs (the queue row and its NOTIFY, committed through a Marten
/// session as the write-ahead commit adds them) while executors that start no containers claim as many as they have free
/// slots in one call (FOR UPDATE SKIP LOCKED, tenant ceiling checked) and finish each (the row update and "done"
/// NOTIFY, as the terminal commit adds them). Run events are left out: their cost is the audit figure. On a database of its own.
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
            using var store = DocumentStore.For(o => MartenSetup.Configure(o, connection));
            await using var source = NpgsqlDataSource.Create(connection);
            var queue = new RunQueue(source);
            // At most this many runs wait at once, as admission bounds the queue; producers wait for room.
            using var room = new SemaphoreSlim(512, 512);
            using var stop = new CancellationTokenSource();
            long dispatched = 0;
            var limits = new RunLimits(10000, 128, 1, 64, 65536, 16);

            async Task ProduceAsync(int producer)
            {
                var caller = new Caller("bench", "bench-tenant-" + producer, ["runner"]);
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
                    var work = new RunWork(runId,
                        new QueuedRequest("python", new string('a', 64), 8, new string('b', 64), 0, [], [], RequestedLimits.None, "internal", "python", "standard"),
                        new PolicyDecision(Decision.Allow, new string('c', 64), ["runners-default"], limits, [], []), caller, null, null);
                    await using var session = store.LightweightSession();
                    RunQueue.Enqueue(session, work, caller.Tenant, "bench-api", null, 30);
                    await session.SaveChangesAsync();
                }
            }

            async Task ClaimAsync(int claimer)
            {
                // An executor with slotsPerClaimer slots: each round claims as many runs as it has free slots, in one call.
                var node = "bench-executor-" + claimer;
                using var slots = new SemaphoreSlim(slotsPerClaimer, slotsPerClaimer);
                var finishing = new List<Task>();
                while (!stop.IsCancellationRequested)
                {
                    var free = 0;
                    while (slots.Wait(0))
                        free++;
                    var claimed = free == 0 ? [] : await queue.ClaimAsync(node, 1_000_000, 30, free, CancellationToken.None);
                    if (free - claimed.Count > 0)
                        slots.Release(free - claimed.Count);
                    foreach (var run in claimed)
                        finishing.Add(FinishAsync(run.Work.RunId, slots));
                    finishing.RemoveAll(t => t.IsCompleted);
                    if (claimed.Count == 0)
                        await (finishing.Count > 0 ? Task.WhenAny(finishing.Append(Task.Delay(1))) : Task.Delay(1));
                }
                await Task.WhenAll(finishing);
            }

            async Task FinishAsync(Guid runId, SemaphoreSlim slots)
            {
                await Task.Yield();
                await using var session = store.LightweightSession();
                RunQueue.Finish(session, runId);
                await session.SaveChangesAsync();
                Interlocked.Increment(ref dispatched);
                room.Release();
                slots.Release();
            }

            // Warm-up: connections, statements, the claim function's plan.
            var warm = Task.WhenAll(Enumerable.Range(0, producers).Select(ProduceAsync).Concat(Enumerable.Range(0, claimers).Select(ClaimAsync)));
            await Task.Delay(TimeSpan.FromSeconds(1));
            var before = Interlocked.Read(ref dispatched);
            var watch = Stopwatch.StartNew();
            await Task.Delay(duration);
            var count = Interlocked.Read(ref dispatched) - before;
            var seconds = watch.Elapsed.TotalSeconds;
            stop.Cancel();
            await warm;
            return new DispatchFigures(count / seconds, count, producers, claimers, slotsPerClaimer, seconds);
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            await ExecuteAsync(adminConnection, $"DROP DATABASE IF EXISTS {database} WITH (FORCE)");
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
