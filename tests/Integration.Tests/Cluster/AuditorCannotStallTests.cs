using System.Diagnostics;
using System.Net;
using System.Text.Json;
using Npgsql;
using Sandbox.Audited.Audit.Queue;
using Sandbox.Audited.Audit.Trail;
using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Audit;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Cluster;

/// <summary>
/// Any login may take an advisory lock, so the read-only auditor could once stall a tenant's runs and checkpoints by
/// holding the keys the service serialised on. The service now serialises on rows only sandbox_app may lock.
/// </summary>
[Collection(ServiceCollection.Name)]
public sealed class AuditorCannotStallTests(ServiceFixture service)
{
    private static readonly TimeSpan Prompt = TimeSpan.FromSeconds(15);

    [Fact]
    public async Task OldAdvisoryKeysHeldElsewhereAndTheAuditorsLockAttemptsStallNeitherRunsNorCheckpoints()
    {
        var tenant = AuditTestClient.NewTenant("stall");
        // The old keys, held by a login that may still take advisory locks (since 0097 the auditor may not: a superuser here).
        await using var holder = new NpgsqlConnection(service.Database.AdminConnection);
        await holder.OpenAsync();
        await TenantLocks.HoldOldAdvisoryKeysAsync(holder, tenant);
        // All the auditor may take on the lock table (it may read it): ACCESS SHARE, which only DDL waits for, held throughout.
        await using var auditor = new NpgsqlConnection(service.Database.AuditorConnection);
        await auditor.OpenAsync();
        await using var open = await auditor.BeginTransactionAsync();
        await TenantLocks.ExecuteAsync(auditor, "LOCK TABLE sandbox.tenant_locks IN ACCESS SHARE MODE");

        var watch = Stopwatch.StartNew();
        var (response, run) = await service.Runner("vic", tenant).RunAsync(new { language = "shell", code = "echo through" });
        var runTook = watch.Elapsed;

        Assert.True(response.StatusCode == HttpStatusCode.OK, run.ToJsonString());
        Assert.Equal("through\n", run.Str("stdout.content"));
        Assert.True(runTook < Prompt, $"the run took {runTook}");
        // The run's fast path took the tenant's queue row: the row the auditor now tries to lock exists.
        Assert.Equal(1L, await service.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.tenant_locks WHERE tenant = $1 AND purpose = 'queue'", tenant));
        await TenantLocks.AssertAuditorCannotLockAsync(service.Database.AuditorConnection, tenant);

        await AuditSeed.RunAsync(service, tenant, "vic");
        watch.Restart();
        var checkpoint = await service.Auditor(tenant).PostAsync("/v1/audit/checkpoints", null);
        var checkpointTook = watch.Elapsed;

        Assert.True(checkpoint.StatusCode == HttpStatusCode.Created, (await ApiCalls.BodyAsync(checkpoint)).ToJsonString());
        Assert.True(checkpointTook < Prompt, $"the checkpoint took {checkpointTook}");
        // The auditor held both old keys all along: the service no longer takes them.
        await using var held = new NpgsqlCommand(
            "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory' AND granted", holder);
        Assert.Equal(2L, (long)(await held.ExecuteScalarAsync())!);
    }
}

/// <summary>The run queue's and the audit tree's tenant locks on a database of their own.</summary>
public sealed class TenantRowLockTests : IAsyncLifetime
{
    private readonly TestDatabase _database = new();

    public Task InitializeAsync() => _database.CreateAsync();

    public Task DisposeAsync() => _database.DisposeAsync().AsTask();

    [Fact]
    public async Task ClaimsAndTheFastPathCeilingOfATenantWhoseOldAdvisoryKeysAreHeldGoThrough()
    {
        await using var holder = new NpgsqlConnection(_database.AdminConnection);
        await holder.OpenAsync();
        await TenantLocks.HoldOldAdvisoryKeysAsync(holder, "t-victim");
        await using var dataSource = NpgsqlDataSource.Create(_database.AppConnection);
        var queue = new RunQueue(dataSource);
        var victim = new List<Guid>();
        for (var i = 0; i < 4; i++)
        {
            victim.Add(Guid.CreateVersion7());
            await InsertQueuedAsync(_database, victim[^1], "t-victim");
        }
        var other = new List<Guid> { Guid.CreateVersion7(), Guid.CreateVersion7() };
        foreach (var runId in other)
            await InsertQueuedAsync(_database, runId, "t-other");

        // Ceiling 2, four wanted: the first round meets only the victim's runs and takes two; the second tries t-other's lock.
        var claimed = await queue.ClaimAsync("exec", 2, 30, 4, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal([.. victim[..2], .. other], claimed.Select(c => c.Work.RunId));
        await TenantLocks.AssertAuditorCannotLockAsync(_database.AuditorConnection, "t-victim");
        await using var app = new NpgsqlConnection(_database.AppConnection);
        await app.OpenAsync();
        await RoomOnEnqueueAsync(app, "t-victim", 3);
        var full = await Assert.ThrowsAsync<PostgresException>(() => RoomOnEnqueueAsync(app, "t-victim", 2));
        Assert.Equal("SBX01", full.SqlState);
        var tree = new AuditTree(dataSource);
        Assert.Equal(0L, await tree.ExtendAsync("t-victim", 0, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task TheServiceStillSerialisesEachTenantOnItsRows()
    {
        await using var dataSource = NpgsqlDataSource.Create(_database.AppConnection);
        var queue = new RunQueue(dataSource);
        var first = Guid.CreateVersion7();
        await InsertQueuedAsync(_database, first, "t-held");
        await using var app = new NpgsqlConnection(_database.AppConnection);
        await app.OpenAsync();

        // Another transaction of the service holds the tenant's queue lock: a claim and a fast-path check wait for it.
        await using (var tx = await app.BeginTransactionAsync())
        {
            await TenantLocks.ExecuteAsync(app, "SELECT sandbox.sbx_lock_tenant('t-held', 'queue')");
            var claim = queue.ClaimAsync("exec", 10, 30, 1, CancellationToken.None);
            var room = Task.Run(async () =>
            {
                await using var other = new NpgsqlConnection(_database.AppConnection);
                await other.OpenAsync();
                await RoomOnEnqueueAsync(other, "t-held", 10);
            });
            await Task.Delay(TimeSpan.FromSeconds(1));
            Assert.False(claim.IsCompleted, "the claim did not wait for the tenant's lock");
            Assert.False(room.IsCompleted, "the fast path's ceiling check did not wait for the tenant's lock");
            await tx.CommitAsync();
            Assert.Equal(first, Assert.Single(await claim.WaitAsync(TimeSpan.FromSeconds(10))).Work.RunId);
            await room.WaitAsync(TimeSpan.FromSeconds(10));
        }

        // A batch claim's later rounds only try: a tenant whose lock is held is passed over, not waited for.
        var capped = new[] { Guid.CreateVersion7(), Guid.CreateVersion7() };
        foreach (var runId in capped)
            await InsertQueuedAsync(_database, runId, "t-capped");
        var busy = Guid.CreateVersion7();
        await InsertQueuedAsync(_database, busy, "t-busy");
        await using (var tx = await app.BeginTransactionAsync())
        {
            await TenantLocks.ExecuteAsync(app, "SELECT sandbox.sbx_lock_tenant('t-busy', 'queue')");
            // Ceiling 1, two wanted: the first round takes one of t-capped's; the second meets t-busy, whose lock is held.
            var claimed = await queue.ClaimAsync("exec", 1, 30, 2, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(5));
            Assert.Equal(capped[0], Assert.Single(claimed).Work.RunId);
            await tx.RollbackAsync();
        }
        Assert.Equal(busy, Assert.Single(await queue.ClaimAsync("exec", 1, 30, 2, CancellationToken.None)).Work.RunId);

        // One writer per tenant tree: an extension waits for the tenant's audit-tree lock.
        var tree = new AuditTree(dataSource);
        await using (var tx = await app.BeginTransactionAsync())
        {
            await TenantLocks.ExecuteAsync(app, "SELECT sandbox.sbx_lock_tenant('t-held', 'audit-tree')");
            var extend = tree.ExtendAsync("t-held", 0, CancellationToken.None);
            await Task.Delay(TimeSpan.FromSeconds(1));
            Assert.False(extend.IsCompleted, "the tree extension did not wait for the tenant's lock");
            await tx.CommitAsync();
            Assert.Equal(0L, await extend.WaitAsync(TimeSpan.FromSeconds(10)));
        }
    }

    private static async Task RoomOnEnqueueAsync(NpgsqlConnection connection, string tenant, int maxPerTenant)
    {
        await using var command = new NpgsqlCommand("SELECT sandbox.sbx_room_on_enqueue($1, $2)", connection) { CommandTimeout = 10 };
        command.Parameters.AddWithValue(tenant);
        command.Parameters.AddWithValue(maxPerTenant);
        await command.ExecuteNonQueryAsync();
    }

    private static async Task InsertQueuedAsync(TestDatabase database, Guid runId, string tenant) =>
        await database.ExecuteAsync("INSERT INTO sandbox.run_queue (run_id, tenant, payload, requested_by) VALUES ($1, $2, $3::jsonb, 'test')",
            runId, tenant, JsonSerializer.Serialize(Work(runId, tenant), RunQueue.Json));

    private static RunWork Work(Guid runId, string tenant) => new(runId,
        new QueuedRequest("python", new string('0', 64), 0, new string('0', 64), 0, [], [], RequestedLimits.None, "internal", "python", "standard"),
        new PolicyDecision(Decision.Allow, "test", [], new RunLimits(1000, 64, 1, 16, 1024, 16), [], []), new Caller("ada", tenant, ["runner"]), null, null);
}

/// <summary>
/// What an insider does in these tests: hold the keys the service used to lock on (a login that still may), and, as the
/// auditor, try every lock the service takes now.
/// </summary>
internal static class TenantLocks
{
    /// <summary>The run queue's and the audit tree's former advisory keys for the tenant, session-level: held until the connection closes.</summary>
    public static Task HoldOldAdvisoryKeysAsync(NpgsqlConnection connection, string tenant) => ExecuteAsync(connection,
        "SELECT pg_advisory_lock(hashtext('sbx_run_queue:' || $1)), pg_advisory_lock(hashtextextended('sbx-audit-tree:' || $1, 0))", tenant);

    /// <summary>Every way of locking the tenant's rows, or the table against the service's writes, is refused to the auditor.</summary>
    public static async Task AssertAuditorCannotLockAsync(string auditorConnection, string tenant)
    {
        await using var auditor = new NpgsqlConnection(auditorConnection);
        await auditor.OpenAsync();
        string[] attempts =
        [
            "SELECT 1 FROM sandbox.tenant_locks WHERE tenant = $1 FOR UPDATE",
            "SELECT 1 FROM sandbox.tenant_locks WHERE tenant = $1 FOR NO KEY UPDATE",
            "SELECT 1 FROM sandbox.tenant_locks WHERE tenant = $1 FOR SHARE",
            "SELECT 1 FROM sandbox.tenant_locks WHERE tenant = $1 FOR KEY SHARE",
            "LOCK TABLE sandbox.tenant_locks IN EXCLUSIVE MODE",
            "LOCK TABLE sandbox.tenant_locks IN ROW EXCLUSIVE MODE",
            "INSERT INTO sandbox.tenant_locks (tenant, purpose) VALUES ($1 || '-new', 'queue')",
            "UPDATE sandbox.tenant_locks SET purpose = purpose WHERE tenant = $1",
            "SELECT sandbox.sbx_lock_tenant($1, 'queue')",
            "SELECT sandbox.sbx_room_on_enqueue($1, 100)",
            // Since 0097 no advisory lock at all: not the old keys, nor Marten's daemon leadership, nor the migrate command's.
            "SELECT pg_advisory_lock(hashtext('sbx_run_queue:' || $1))",
            "SELECT pg_try_advisory_lock(727274)",
            "SELECT pg_advisory_xact_lock_shared(1, 2)",
        ];
        foreach (var sql in attempts)
        {
            // LOCK TABLE is refused outside a transaction for another reason: try everything inside one.
            await using var tx = await auditor.BeginTransactionAsync();
            object[] parameters = sql.Contains("$1", StringComparison.Ordinal) ? [tenant] : [];
            var denied = await Assert.ThrowsAsync<PostgresException>(() => ExecuteAsync(auditor, sql, parameters));
            Assert.True(denied.SqlState == PostgresErrorCodes.InsufficientPrivilege, $"{sql}: {denied.SqlState} {denied.MessageText}");
            await tx.RollbackAsync();
        }
        // The reading it is given stays possible.
        await using var read = new NpgsqlCommand("SELECT count(*) FROM sandbox.tenant_locks WHERE tenant = $1", auditor);
        read.Parameters.AddWithValue(tenant);
        Assert.True((long)(await read.ExecuteScalarAsync())! >= 1);
    }

    public static async Task ExecuteAsync(NpgsqlConnection connection, string sql, params object[] parameters)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        foreach (var p in parameters)
            command.Parameters.AddWithValue(p);
        await command.ExecuteNonQueryAsync();
    }
}
