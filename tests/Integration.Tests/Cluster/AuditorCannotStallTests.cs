using System.Diagnostics;
using System.Net;
using Npgsql;
using Sandbox.Audited.Tests.Audit;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Cluster;

/// <summary>
/// Any login may take an advisory lock unless the database says otherwise, and the service serialises each tenant on
/// advisory keys: the read-only auditor holding a tenant's key stalled its runs (503 after 30 s) and checkpoints. Since
/// migration 0096 the advisory-lock functions are the service's and the eraser's only.
/// </summary>
[Collection(ServiceCollection.Name)]
public sealed class AuditorCannotStallTests(ServiceFixture service)
{
    private static readonly TimeSpan Prompt = TimeSpan.FromSeconds(15);

    [Fact]
    public async Task TheAuditorCannotTakeAnyAdvisoryLockSoTheTenantsRunsAndCheckpointsStayPrompt()
    {
        var tenant = AuditTestClient.NewTenant("stall");
        await using var auditor = new NpgsqlConnection(service.Database.AuditorConnection);
        await auditor.OpenAsync();
        string[] attempts =
        [
            "SELECT pg_advisory_lock(hashtext('sbx_run_queue:' || $1))",                  // the tenant's claims and fast path
            "SELECT pg_advisory_lock(hashtextextended('sbx-audit-tree:' || $1, 0))",      // the tenant's audit tree
            "SELECT pg_try_advisory_lock(727274)",                                        // the migrate command
            "SELECT pg_advisory_lock_shared(1, 2)",
            "SELECT pg_advisory_xact_lock(1)",
            "SELECT pg_try_advisory_xact_lock_shared(1)",
        ];
        foreach (var sql in attempts)
        {
            await using var command = new NpgsqlCommand(sql, auditor);
            if (sql.Contains("$1", StringComparison.Ordinal))
                command.Parameters.AddWithValue(tenant);
            var denied = await Assert.ThrowsAsync<PostgresException>(() => command.ExecuteScalarAsync());
            Assert.True(denied.SqlState == PostgresErrorCodes.InsufficientPrivilege, $"{sql}: {denied.SqlState} {denied.MessageText}");
        }
        await using (var held = new NpgsqlCommand("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'", auditor))
            Assert.Equal(0L, (long)(await held.ExecuteScalarAsync())!);

        var watch = Stopwatch.StartNew();
        var (response, run) = await service.Runner("vic", tenant).RunAsync(new { language = "shell", code = "echo through" });
        Assert.True(response.StatusCode == HttpStatusCode.OK, run.ToJsonString());
        Assert.True(watch.Elapsed < Prompt, $"the run took {watch.Elapsed}");
        watch.Restart();
        var checkpoint = await service.Auditor(tenant).PostAsync("/v1/audit/checkpoints", null);
        Assert.True(checkpoint.StatusCode == HttpStatusCode.Created, (await ApiCalls.BodyAsync(checkpoint)).ToJsonString());
        Assert.True(watch.Elapsed < Prompt, $"the checkpoint took {watch.Elapsed}");
    }

    [Fact]
    public async Task TheServiceAndTheEraserKeepTheirAdvisoryLocks()
    {
        // Marten's daemon leadership and the tenant serialisation run as the service; erasure runs as the eraser.
        await using var app = new NpgsqlConnection(service.Database.AppConnection);
        await app.OpenAsync();
        await using var take = new NpgsqlCommand("SELECT pg_try_advisory_xact_lock(hashtext('sbx_run_queue:stall-check'))", app);
        Assert.True((bool)(await take.ExecuteScalarAsync())!);
        Assert.Equal(2L, await service.Database.ScalarAsync<long>("""
            SELECT count(DISTINCT r.rolname) FROM pg_proc p, pg_roles r
            WHERE p.proname = 'pg_advisory_xact_lock' AND r.rolname IN ('sandbox_app', 'sandbox_eraser')
              AND has_function_privilege(r.oid, p.oid, 'EXECUTE')
            """));
    }
}
