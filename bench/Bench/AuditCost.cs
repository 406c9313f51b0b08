using System.Diagnostics;
using Marten;
using Npgsql;
using Sandbox.Audited.Audit;
using Sandbox.Audited.Audit.Migrations;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Audit.Trail;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Bench;

public sealed record AuditFigures(Latency WriteAheadCommit, Latency OutcomeCommit, long EventsSeeded, double AppendEventsPerSecond, long EventsVerified, double VerifyEventsPerSecond,
    long ExportedEvents, long ExportedBytes, double ExportEventsPerSecond, bool Verified);

/// <summary>
/// Audit cost on a database of its own (never the service's record): 100,000+ events written through the
/// real write path (RunStream: canonical form, hash chain, Marten append), then verified and exported.
/// </summary>
public static class AuditCost
{
    private const string Tenant = "bench-audit";

    public static async Task<AuditFigures> MeasureAsync(string adminConnection, string migrations, int runs, int writers)
    {
        var database = "sbx_bench_" + Guid.NewGuid().ToString("N")[..8];
        await ExecuteAsync(adminConnection, $"CREATE DATABASE {database} OWNER sandbox_owner");
        var connection = new NpgsqlConnectionStringBuilder(adminConnection) { Database = database, MaxPoolSize = 50 }.ConnectionString;
        try
        {
            await MigrationRunner.ApplyAsync(connection, migrations, TextWriter.Null, CancellationToken.None);
            using var store = DocumentStore.For(o => MartenSetup.Configure(o, connection));
            await using var source = NpgsqlDataSource.Create(connection);

            // Latency of each of a run's two commits, one writer at a time: where a warm run's time goes.
            var writeAhead = new List<double>();
            var outcome = new List<double>();
            for (var i = 0; i < 200; i++)
            {
                var runId = Guid.CreateVersion7();
                var events = Events(runId, DateTimeOffset.UtcNow);
                var stream = new RunStream(store, runId, new WriteContext("bench", null, Tenant: Tenant));
                var commit = Stopwatch.StartNew();
                await stream.AppendAsync(events.Take(2).ToList(), CancellationToken.None);
                writeAhead.Add(commit.Elapsed.TotalMilliseconds);
                commit.Restart();
                await stream.AppendAsync(events.Skip(2).Take(5).ToList(), CancellationToken.None);
                outcome.Add(commit.Elapsed.TotalMilliseconds);
                await stream.AppendAsync(events.Skip(7).ToList(), CancellationToken.None);
            }

            var sequential = 200L * 8;
            var seeded = sequential;
            var next = -1;
            var watch = Stopwatch.StartNew();
            await Task.WhenAll(Enumerable.Range(0, writers).Select(async _ =>
            {
                while (Interlocked.Increment(ref next) < runs)
                {
                    var runId = Guid.CreateVersion7();
                    var events = Events(runId, DateTimeOffset.UtcNow);
                    var stream = new RunStream(store, runId, new WriteContext("bench", null, Tenant: Tenant));
                    await stream.AppendAsync(events.Take(2).ToList(), CancellationToken.None);   // the write-ahead commit
                    await stream.AppendAsync(events.Skip(2).ToList(), CancellationToken.None);   // the outcome commit
                    Interlocked.Add(ref seeded, events.Count);
                }
            }));
            var appendRate = (seeded - sequential) / watch.Elapsed.TotalSeconds;

            var verification = new ChainVerification(source);
            watch.Restart();
            var report = await verification.VerifyAsync(Tenant, new VerifyScope(), CancellationToken.None);
            var verifyRate = report.EventsChecked / watch.Elapsed.TotalSeconds;

            var counting = new CountingStream();
            watch.Restart();
            var exported = await new AuditExport(source).WriteAsync(new EventFilter(Tenant), ExportFormats.Ndjson, counting, CancellationToken.None);
            var exportRate = exported / watch.Elapsed.TotalSeconds;

            return new AuditFigures(Latency.Of("audit commit: request + decision (write-ahead)", writeAhead),
                Latency.Of("audit commit: outcome (5 events)", outcome), seeded, appendRate, report.EventsChecked, verifyRate, exported, counting.Bytes, exportRate, report.Verified);
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            await ExecuteAsync(adminConnection, $"DROP DATABASE IF EXISTS {database} WITH (FORCE)");
        }
    }

    // The events of one ordinary run, as the orchestrator records them.
    internal static List<object> Events(Guid runId, DateTimeOffset at, string tenant = Tenant, string subject = "bench")
    {
        const string code = "print(1)";
        var limits = new RunLimits(10000, 128, 1, 64, 65536, 16);
        var container = "bench" + runId.ToString("N");
        return
        [
            new RunRequested(runId, new Caller(subject, tenant, ["runner"]), "python", code, Sha256Hex.Of(code), code.Length,
                Sha256Hex.Of(""), 0, [], [], RequestedLimits.None, "internal", new ClientInfo("127.0.0.1", "bench", null, null), "bench", at),
            new PolicyEvaluated(runId, "allow", new string('b', 64), ["runners-default"], limits, [], ["permitted by rule runners-default"], at),
            new SandboxCreated(runId, container, "sbx-python:current", "sha256:" + new string('c', 64), "bench", true, at,
                new SandboxSettings("runc", "none", true, "65534:65534", ["ALL"], ["no-new-privileges", "seccomp=docker-default"],
                    "/tmp:rw,nosuid,nodev,noexec,size=16m,mode=1777", 134217728, 134217728, 1000000000, 64,
                    ["nofile=256:256", "fsize=67108864:67108864", "core=0:0"], true,
                    new Dictionary<string, string> { ["sandbox.audited.run"] = "pool" }), at),
            new SandboxStarted(runId, container, at),
            new SandboxExited(runId, 0, null, false, false, false, 9000, 6000, 2000, 9000, at),
            new OutputRecorded(runId, new StreamOutput(Sha256Hex.Of("1\n"), 2, 2, false, "utf8", "1\n"),
                new StreamOutput(Sha256Hex.Of(""), 0, 0, false, "utf8", ""), at),
            new RunCompleted(runId, RunStatus.Succeeded, 0, 20, null, at),
            new SandboxRemoved(runId, container, "removed", at),
        ];
    }

    private static async Task ExecuteAsync(string connectionString, string sql)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    private sealed class CountingStream : Stream
    {
        public long Bytes { get; private set; }
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => Bytes;
        public override long Position { get => Bytes; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => Bytes += count;
        public override void Write(ReadOnlySpan<byte> buffer) => Bytes += buffer.Length;
        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            Bytes += buffer.Length;
            return ValueTask.CompletedTask;
        }
    }
}
