using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Tests.Audit;
using Sandbox.Audited.Tests.Infrastructure;
using Sandbox.Audited.Verifier;

namespace Sandbox.Audited.Tests.Evidence;

/// <summary>
/// For tests that call sbx_evidence_sweep themselves: the record the function demands in the same transaction (migration
/// 0102), an evidence_swept of the tenant naming the contents, on a stream of its own (no hash chain: not the sweep's).
/// </summary>
public static class SweepRecords
{
    public static async Task AppendAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, string tenant, params string[] sha256s)
    {
        await using var record = new NpgsqlCommand("""
            WITH s AS (INSERT INTO sandbox.mt_streams (id, version) VALUES (gen_random_uuid(), 1) RETURNING id)
            INSERT INTO sandbox.mt_events (seq_id, id, stream_id, version, data, type, timestamp, headers)
            SELECT nextval('sandbox.mt_events_sequence'), gen_random_uuid(), s.id, 1,
                   jsonb_build_object('caller', jsonb_build_object('subject', 'test', 'tenant', $1::text),
                                      'contents', (SELECT jsonb_agg(jsonb_build_object('sha256', d)) FROM unnest($2::text[]) d)),
                   'evidence_swept', now(), jsonb_build_object('tenant', $1::text)
            FROM s
            """, connection, transaction);
        record.Parameters.AddWithValue(tenant);
        record.Parameters.AddWithValue(sha256s);
        await record.ExecuteNonQueryAsync();
    }
}

/// <summary>
/// Attacks on the evidence sweep: a writer that relies on a content the sweep is removing at that very moment, the same
/// bytes kept by two tenants, the database logins other than the sweep's own function, an artifact an outcome waiting in the
/// journal names once its hold is gone, and an erasure of a content the sweep removes at that moment.
/// </summary>
[Collection(EvidenceSweepCollection.Name)]
public sealed class SweepAttackTests(EvidenceSweepFixture service) : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("sbx-sweep-attack-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private static string Sha(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));

    // As a commit that failed for good leaves it: stored, named by no event, held by no run.
    private Task StoreUnnamedAsync(string tenant, string text) => service.Database.ExecuteAsync("""
        WITH blob AS (INSERT INTO sandbox.evidence_blobs (tenant, sha256, bytes, chunks) VALUES ($1, $2, $3, 1) RETURNING tenant, sha256)
        INSERT INTO sandbox.evidence_chunks (tenant, sha256, chunk_no, data) SELECT tenant, sha256, 0, convert_to($4, 'UTF8') FROM blob
        """, tenant, Sha(text), (long)Encoding.UTF8.GetByteCount(text), text);

    // The content as stored now: null when absent, else whether its chunks still hash to its digest.
    private async Task<bool?> IntactAsync(string tenant, string text) => await service.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.evidence_blobs WHERE tenant = $1 AND sha256 = $2 AND erased_at IS NULL", tenant, Sha(text)) == 0
        ? null
        : await service.Database.ScalarAsync<string>(
            "SELECT encode(sha256(string_agg(data, ''::bytea ORDER BY chunk_no)), 'hex') FROM sandbox.evidence_chunks WHERE tenant = $1 AND sha256 = $2",
            tenant, Sha(text)) == Sha(text);

    private Task<long> WaitersOnTheSweepKeyAsync() => service.Database.ScalarAsync<long>(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = 1937204080::oid AND objsubid = 2");

    [Theory]
    [InlineData("stdin")]
    [InlineData("file")]
    public async Task AWriterThatWaitsWhileTheSweepRemovesTheContentItReliesOnStoresItAgainAndTheRunNamesIntactContent(string how)
    {
        // The bytes a failed request left behind; the client sends them again (as stdin, staged in the write-ahead commit, or as
        // a file, put before it) just as the sweep is removing them: its removal is done, not yet committed.
        var tenant = AuditTestClient.NewTenant("sweep-race");
        var text = $"sent again while swept {Guid.NewGuid():N}";
        await StoreUnnamedAsync(tenant, text);
        await using var sweep = new NpgsqlConnection(service.Database.AppConnection);
        await sweep.OpenAsync();
        var removing = await sweep.BeginTransactionAsync();
        await SweepRecords.AppendAsync(sweep, removing, tenant, Sha(text));
        await using (var remove = new NpgsqlCommand("SELECT count(*) FROM sandbox.sbx_evidence_sweep($1, $2)", sweep, removing))
        {
            remove.Parameters.AddWithValue(tenant);
            remove.Parameters.AddWithValue(new[] { Sha(text) });
            Assert.Equal(1L, await remove.ExecuteScalarAsync());
        }

        var request = service.Runner("sam", tenant).RunAsync(how == "stdin"
            ? new { language = "shell", code = "cat", stdin = text, files = Array.Empty<object>() }
            : new { language = "shell", code = "cat in.txt", stdin = "", files = new object[] { new { name = "in.txt", content = text } } });
        // The writer waits on the content's key (its statement, or its put, began while the row was still there).
        await Eventually.WaitUntilAsync(async () => await WaitersOnTheSweepKeyAsync() > 0,
            () => "the writer never waited on the sweep's key", TimeSpan.FromSeconds(20));
        await removing.CommitAsync();

        var (response, run) = await request;
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(text, run.Str("stdout.content"));
        Assert.True(await IntactAsync(tenant, text), "the run names a content the sweep removed");
        var evidence = await service.Auditor(tenant).OkJsonAsync("/v1/audit/evidence/verify");
        Assert.True(evidence["verified"]!.GetValue<bool>(), evidence.ToJsonString());
    }

    [Fact]
    public async Task TheSameBytesGoOnlyFromTheTenantNoEventNamesThemInWhoseRecordSaysSoTruthfullyAndBothExportsVerifyOffline()
    {
        // Tenant a names the bytes (an input of a run); tenant b holds the same bytes for a request whose write-ahead commit failed.
        string a = AuditTestClient.NewTenant("sweep-ta"), b = AuditTestClient.NewTenant("sweep-tb");
        var id = Guid.NewGuid().ToString("N")[..8];
        var text = $"the same bytes in two tenants {id}";
        var (named, _) = await service.Runner("ann", a).RunAsync(new { language = "shell", code = "cat in.txt", files = new[] { new { name = "in.txt", content = text } } });
        Assert.Equal(HttpStatusCode.OK, named.StatusCode);
        await service.Database.ExecuteAsync($"""
            CREATE FUNCTION sandbox.sweep_tenants_{id}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'refused for good (test)' USING ERRCODE = '23514'; END $$;
            CREATE TRIGGER sweep_tenants_{id} BEFORE INSERT ON sandbox.mt_events FOR EACH ROW
              WHEN (NEW.type = 'run_requested' AND NEW.data::text LIKE '%refused-{id}%') EXECUTE FUNCTION sandbox.sweep_tenants_{id}();
            """);
        var (refused, _) = await service.Runner("bob", b).RunAsync(new { language = "shell", code = "true", files = new[] { new { name = $"refused-{id}.txt", content = text } } });
        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        await service.Database.ExecuteAsync($"""
            DROP TRIGGER sweep_tenants_{id} ON sandbox.mt_events; DROP FUNCTION sandbox.sweep_tenants_{id}();
            ALTER TABLE sandbox.evidence_blobs DISABLE TRIGGER sbx_evidence_blobs_guard;
            UPDATE sandbox.evidence_blobs SET stored_at = stored_at - interval '2 hours' WHERE tenant IN ('{a}', '{b}');
            ALTER TABLE sandbox.evidence_blobs ENABLE TRIGGER sbx_evidence_blobs_guard;
            UPDATE sandbox.evidence_holds SET held_at = held_at - interval '2 hours' WHERE tenant IN ('{a}', '{b}');
            """);
        var bHold = await service.Database.ScalarAsync<Guid>("SELECT run_id FROM sandbox.evidence_holds WHERE tenant = $1 AND sha256 = $2", b, Sha(text));

        // The service's login cannot remove tenant a's copy: b's failed request does not make a's bytes unnamed.
        await using (var app = new NpgsqlConnection(service.Database.AppConnection))
        {
            await app.OpenAsync();
            await using var recorded = await app.BeginTransactionAsync();
            await using (var unhold = new NpgsqlCommand("DELETE FROM sandbox.evidence_holds WHERE tenant = $1", app, recorded))
            {
                unhold.Parameters.AddWithValue(a);
                await unhold.ExecuteNonQueryAsync();
            }
            await SweepRecords.AppendAsync(app, recorded, a, Sha(text));
            await using var sweepA = new NpgsqlCommand("SELECT * FROM sandbox.sbx_evidence_sweep($1, $2)", app, recorded);
            sweepA.Parameters.AddWithValue(a);
            sweepA.Parameters.AddWithValue(new[] { Sha(text) });
            Assert.Contains("named by an event", (await Assert.ThrowsAsync<PostgresException>(() => sweepA.ExecuteNonQueryAsync())).MessageText);
        }

        var report = await service.Sweeper.PassAsync(CancellationToken.None);

        Assert.Equal(0, report!.TenantsFailed);
        var (where, what) = Assert.Single(report.Removed, r => r.Tenant == a || r.Tenant == b);
        Assert.Equal(b, where);
        Assert.Equal(Sha(text), what.Sha256);
        Assert.True(await IntactAsync(a, text));
        Assert.Null(await IntactAsync(b, text));

        // What b's record says is true: its tenant, the digest, the size, the failed run, and nothing on a's record.
        Assert.Equal(0, await service.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.mt_events WHERE type = 'evidence_swept' AND (data -> 'caller' ->> 'tenant' = $1 OR headers ->> 'tenant' = $1)", a));
        var swept = JsonNode.Parse((await service.Database.ScalarAsync<string>(
            "SELECT data::text FROM sandbox.mt_events WHERE type = 'evidence_swept' AND data -> 'caller' ->> 'tenant' = $1", b))!)!;
        var content = Assert.Single(swept["contents"]!.AsArray())!;
        Assert.Equal(Sha(text), content.Str("sha256"));
        Assert.Equal(Encoding.UTF8.GetByteCount(text), content["bytes"]!.GetValue<long>());
        Assert.Contains($"run {bHold}", content.Str("reason"));
        Assert.Contains("never recorded", content.Str("reason"));

        // Both tenants' exports, with a signed checkpoint taken after the sweep, verify offline; b's export carries the sweep.
        foreach (var tenant in new[] { a, b })
        {
            var auditor = service.Auditor(tenant);
            var checkpoint = await auditor.PostAsync("/v1/audit/checkpoints", null);
            Assert.Equal(HttpStatusCode.Created, checkpoint.StatusCode);
            string export = Path.Combine(_directory, tenant + ".ndjson"), head = Path.Combine(_directory, tenant + ".checkpoint.json"), key = Path.Combine(_directory, "key.json");
            await File.WriteAllTextAsync(head, await checkpoint.Content.ReadAsStringAsync());
            await File.WriteAllTextAsync(key, await auditor.GetStringAsync("/v1/audit/checkpoints/key"));
            var lines = await auditor.GetStringAsync("/v1/audit/export");
            await File.WriteAllTextAsync(export, lines);
            Assert.Equal(tenant == b, lines.Contains("\"evidence_swept\"", StringComparison.Ordinal));
            var output = new StringWriter();
            var exit = VerifyCommand.Run([export, "--checkpoint", head, "--key", key], output);
            Assert.True(exit == VerifyCommand.Verified, output.ToString());
            var evidence = await auditor.OkJsonAsync("/v1/audit/evidence/verify");
            Assert.True(evidence["verified"]!.GetValue<bool>(), evidence.ToJsonString());
        }
    }

    [Fact]
    public async Task NoOtherLoginCanSweepOrTouchHoldsAndTheServiceCannotMoveAHoldToAnotherContent()
    {
        var tenant = AuditTestClient.NewTenant("sweep-logins");
        var text = $"unnamed, unheld {Guid.NewGuid():N}";
        await StoreUnnamedAsync(tenant, text);
        var run = Guid.NewGuid();

        // The auditor's login: reads holds, never sweeps, relies, adds, renews or deletes.
        await using (var auditor = new NpgsqlConnection(service.Database.AuditorConnection))
        {
            await auditor.OpenAsync();
            foreach (var sql in new[]
                     {
                         "SELECT * FROM sandbox.sbx_evidence_sweep($1, ARRAY[$2])",
                         "SELECT sandbox.sbx_evidence_rely($1, $2)",
                         "INSERT INTO sandbox.evidence_holds (tenant, sha256, run_id, node) VALUES ($1, $2, gen_random_uuid(), 'n')",
                         "UPDATE sandbox.evidence_holds SET held_at = now() WHERE tenant = $1 AND sha256 = $2",
                         "DELETE FROM sandbox.evidence_holds WHERE tenant = $1 AND sha256 = $2",
                     })
            {
                await using var command = new NpgsqlCommand(sql, auditor);
                command.Parameters.AddWithValue(tenant);
                command.Parameters.AddWithValue(Sha(text));
                Assert.Equal(PostgresErrorCodes.InsufficientPrivilege, (await Assert.ThrowsAsync<PostgresException>(() => command.ExecuteNonQueryAsync())).SqlState);
            }
        }

        // The eraser's role (erases with a record) cannot remove without one either.
        await using (var eraser = new NpgsqlConnection(service.Database.AdminConnection))
        {
            await eraser.OpenAsync();
            await using (var become = new NpgsqlCommand("SET ROLE sandbox_eraser", eraser))
                await become.ExecuteNonQueryAsync();
            await using var command = new NpgsqlCommand("SELECT * FROM sandbox.sbx_evidence_sweep($1, ARRAY[$2])", eraser);
            command.Parameters.AddWithValue(tenant);
            command.Parameters.AddWithValue(Sha(text));
            Assert.Equal(PostgresErrorCodes.InsufficientPrivilege, (await Assert.ThrowsAsync<PostgresException>(() => command.ExecuteNonQueryAsync())).SqlState);
        }

        // The service's login holds a content for a run, and may renew it, but cannot point the hold at another run or content.
        await using var app = new NpgsqlConnection(service.Database.AppConnection);
        await app.OpenAsync();
        await using (var hold = new NpgsqlCommand("INSERT INTO sandbox.evidence_holds (tenant, sha256, run_id, node) VALUES ($1, $2, $3, 'n')", app))
        {
            hold.Parameters.AddWithValue(tenant);
            hold.Parameters.AddWithValue(Sha(text));
            hold.Parameters.AddWithValue(run);
            await hold.ExecuteNonQueryAsync();
        }
        foreach (var set in new[] { "sha256 = repeat('0', 64)", "tenant = 'other'", "run_id = gen_random_uuid()" })
        {
            await using var move = new NpgsqlCommand($"UPDATE sandbox.evidence_holds SET {set} WHERE tenant = $1 AND run_id = $2", app);
            move.Parameters.AddWithValue(tenant);
            move.Parameters.AddWithValue(run);
            Assert.Equal(PostgresErrorCodes.InsufficientPrivilege, (await Assert.ThrowsAsync<PostgresException>(() => move.ExecuteNonQueryAsync())).SqlState);
        }
        // Held, the function refuses it; the content stays.
        await using (var recorded = await app.BeginTransactionAsync())
        {
            await SweepRecords.AppendAsync(app, recorded, tenant, Sha(text));
            await using var held = new NpgsqlCommand("SELECT * FROM sandbox.sbx_evidence_sweep($1, ARRAY[$2])", app, recorded);
            held.Parameters.AddWithValue(tenant);
            held.Parameters.AddWithValue(Sha(text));
            var refused = await Assert.ThrowsAsync<PostgresException>(() => held.ExecuteNonQueryAsync());
            Assert.Equal(PostgresErrorCodes.CheckViolation, refused.SqlState);
            Assert.Contains("still held", refused.MessageText);
        }
        Assert.True(await IntactAsync(tenant, text));
    }
    [Fact]
    public async Task AnArtifactAJournaledOutcomeNamesIsHeldAgainByTheJournalSoThatIncludingUnheldContentNeverTakesIt()
    {
        // An outcome waits in this node's journal (the store refuses its artifact as a read-only store does); its artifact's
        // hold is gone, as a node of a version before holds left it (upgraded with the outcome still journaled).
        var tenant = AuditTestClient.NewTenant("sweep-journal");
        var id = Guid.NewGuid().ToString("N")[..8];
        var artifact = $"artifact of an outcome journaled before holds {id}";
        await service.Database.ExecuteAsync($"""
            CREATE FUNCTION sandbox.sweep_journal_{id}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'read-only (test)' USING ERRCODE = '25006'; END $$;
            CREATE TRIGGER sweep_journal_{id} BEFORE INSERT ON sandbox.mt_events FOR EACH ROW
              WHEN (NEW.type = 'artifact_recorded' AND NEW.data ->> 'name' = 'journal-{id}.txt') EXECUTE FUNCTION sandbox.sweep_journal_{id}();
            """);
        var (journaled, run) = await service.Runner("sam", tenant).RunAsync(new { language = "shell", code = $"mkdir -p out && printf '%s' '{artifact}' > out/journal-{id}.txt" });
        Assert.Equal(HttpStatusCode.Accepted, journaled.StatusCode);
        await service.Database.ExecuteAsync($"""
            DELETE FROM sandbox.evidence_holds WHERE tenant = '{tenant}';
            ALTER TABLE sandbox.evidence_blobs DISABLE TRIGGER sbx_evidence_blobs_guard;
            UPDATE sandbox.evidence_blobs SET stored_at = stored_at - interval '2 hours' WHERE tenant = '{tenant}';
            ALTER TABLE sandbox.evidence_blobs ENABLE TRIGGER sbx_evidence_blobs_guard;
            """);
        // The journal keeps trying (every 2 s at most) while the operator turns EvidenceSweep:IncludeUnheld on.
        await Task.Delay(TimeSpan.FromSeconds(6));
        var including = new EvidenceSweeper(service.Services.GetRequiredService<NpgsqlDataSource>(), service.Services.GetRequiredService<Marten.IDocumentStore>(),
            new EvidenceSweepOptions { Enabled = false, IncludeUnheld = true }, service.NodeId, TimeProvider.System,
            Microsoft.Extensions.Logging.Abstractions.NullLogger<EvidenceSweeper>.Instance);
        var report = await including.PassAsync(CancellationToken.None);

        Assert.DoesNotContain(report!.Removed, r => r.Tenant == tenant);
        Assert.True(await IntactAsync(tenant, artifact), "the sweep removed an artifact the journaled outcome names");

        // The store takes the outcome: its artifact is named, and there.
        await service.Database.ExecuteAsync($"DROP TRIGGER sweep_journal_{id} ON sandbox.mt_events; DROP FUNCTION sandbox.sweep_journal_{id}();");
        await Eventually.WaitUntilAsync(async () => await service.Database.ScalarAsync<long>(
                "SELECT count(*) FROM sandbox.mt_events WHERE stream_id = $1::uuid AND type = 'artifact_recorded'", run.Str("runId")) == 1,
            () => "the journal did not commit the outcome once the store took it", TimeSpan.FromSeconds(30));
        Assert.True(await IntactAsync(tenant, artifact));
        var evidence = await service.Auditor(tenant).OkJsonAsync("/v1/audit/evidence/verify");
        Assert.True(evidence["verified"]!.GetValue<bool>(), evidence.ToJsonString());
    }
    private Task<long> WaitingOnLocksAsync() => service.Database.ScalarAsync<long>(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'");

    [Fact]
    public async Task AnErasureOfAContentTheSweepRemovesAtThatMomentStillKeepsItOutForGood()
    {
        // A data-subject request erases a digest that only a failed request stored, while the sweep removes that content: the
        // eraser looked (the row was there), the sweep deletes it, then the eraser marks it. Something else holds the content's
        // chunk for a moment, so that the sweep reaches it first and the eraser queues behind.
        var tenant = AuditTestClient.NewTenant("sweep-erase");
        var text = $"erased while swept {Guid.NewGuid():N}";
        await StoreUnnamedAsync(tenant, text);
        await using var other = new NpgsqlConnection(service.Database.AdminConnection);
        await other.OpenAsync();
        var holding = await other.BeginTransactionAsync();
        await using (var lockChunk = new NpgsqlCommand("SELECT 1 FROM sandbox.evidence_chunks WHERE tenant = $1 AND sha256 = $2 FOR UPDATE", other, holding))
        {
            lockChunk.Parameters.AddWithValue(tenant);
            lockChunk.Parameters.AddWithValue(Sha(text));
            await lockChunk.ExecuteNonQueryAsync();
        }
        await using var sweep = new NpgsqlConnection(service.Database.AppConnection);
        await sweep.OpenAsync();
        var removing = await sweep.BeginTransactionAsync();
        await SweepRecords.AppendAsync(sweep, removing, tenant, Sha(text));
        await using var remove = new NpgsqlCommand("SELECT count(*) FROM sandbox.sbx_evidence_sweep($1, $2)", sweep, removing);
        remove.Parameters.AddWithValue(tenant);
        remove.Parameters.AddWithValue(new[] { Sha(text) });
        var removal = remove.ExecuteScalarAsync();
        await Eventually.WaitUntilAsync(async () => await WaitingOnLocksAsync() >= 1, () => "the sweep never reached the chunk", TimeSpan.FromSeconds(20));

        var eraserConnection = new NpgsqlConnectionStringBuilder(service.Database.AdminConnection) { Options = "-c role=sandbox_eraser" }.ConnectionString;
        var erasure = new EvidenceEraser(eraserConnection, TimeProvider.System)
            .EraseAsync(tenant, [Sha(text)], "dpo", "data-subject request (test)", null, CancellationToken.None);
        await Eventually.WaitUntilAsync(async () => await WaitingOnLocksAsync() >= 2, () => "the eraser never reached the chunk", TimeSpan.FromSeconds(20));
        await holding.CommitAsync();
        Assert.Equal(1L, await removal);
        await removing.CommitAsync();
        var result = await erasure;

        // The erasure is on record, and its digest is kept out: a tombstone, which the same bytes sent again do not pass.
        Assert.Equal(1, await service.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.mt_events WHERE type = 'evidence_erased' AND data -> 'caller' ->> 'tenant' = $1", tenant));
        Assert.DoesNotContain(Sha(text), result.AlreadyErased);
        Assert.Equal(1, await service.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.evidence_blobs WHERE tenant = $1 AND sha256 = $2 AND erased_at IS NOT NULL", tenant, Sha(text)));
        var (again, _) = await service.Runner("sam", tenant).RunAsync(new { language = "shell", code = "true", files = new[] { new { name = "in.txt", content = text } } });
        Assert.Equal(HttpStatusCode.OK, again.StatusCode);
        Assert.Equal(0, await service.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.evidence_chunks WHERE tenant = $1 AND sha256 = $2", tenant, Sha(text)));
    }
    [Fact]
    public async Task TheServicesLoginCannotRemoveAContentOffTheRecord()
    {
        // Named by no event, held by no run (its hold deleted, as the service's login may): the function itself removed it
        // without anything on the tenant's record, so a removal of an in-flight run's artifact left no trace.
        var tenant = AuditTestClient.NewTenant("sweep-unrecorded");
        var text = $"removed by the service's login alone {Guid.NewGuid():N}";
        await StoreUnnamedAsync(tenant, text);
        await using var app = new NpgsqlConnection(service.Database.AppConnection);
        await app.OpenAsync();
        await using (var alone = new NpgsqlCommand("SELECT count(*) FROM sandbox.sbx_evidence_sweep($1, $2)", app))
        {
            alone.Parameters.AddWithValue(tenant);
            alone.Parameters.AddWithValue(new[] { Sha(text) });
            var refused = await Assert.ThrowsAsync<PostgresException>(() => alone.ExecuteScalarAsync());
            Assert.Equal(PostgresErrorCodes.CheckViolation, refused.SqlState);
            Assert.Contains("not on record", refused.MessageText);
        }
        Assert.True(await IntactAsync(tenant, text));

        // An evidence_swept of another tenant, or one naming other contents, in the same transaction is not its record either.
        await using (var elsewhere = await app.BeginTransactionAsync())
        {
            await SweepRecords.AppendAsync(app, elsewhere, "another-tenant", Sha(text));
            await SweepRecords.AppendAsync(app, elsewhere, tenant, Sha("some other content"));
            await using var sweepIt = new NpgsqlCommand("SELECT count(*) FROM sandbox.sbx_evidence_sweep($1, $2)", app, elsewhere);
            sweepIt.Parameters.AddWithValue(tenant);
            sweepIt.Parameters.AddWithValue(new[] { Sha(text) });
            Assert.Equal(PostgresErrorCodes.CheckViolation, (await Assert.ThrowsAsync<PostgresException>(() => sweepIt.ExecuteScalarAsync())).SqlState);
        }
        Assert.True(await IntactAsync(tenant, text));

        // Through the sweep, with its record in the same commit, it goes.
        await service.Database.ExecuteAsync("""
            ALTER TABLE sandbox.evidence_blobs DISABLE TRIGGER sbx_evidence_blobs_guard;
            UPDATE sandbox.evidence_blobs SET stored_at = stored_at - interval '2 hours' WHERE tenant = $1;
            ALTER TABLE sandbox.evidence_blobs ENABLE TRIGGER sbx_evidence_blobs_guard;
            """.Replace("$1", $"'{tenant}'"));
        var including = new EvidenceSweeper(service.Services.GetRequiredService<NpgsqlDataSource>(), service.Services.GetRequiredService<Marten.IDocumentStore>(),
            new EvidenceSweepOptions { Enabled = false, IncludeUnheld = true }, service.NodeId, TimeProvider.System,
            Microsoft.Extensions.Logging.Abstractions.NullLogger<EvidenceSweeper>.Instance);
        var report = await including.PassAsync(CancellationToken.None);
        Assert.Equal(Sha(text), Assert.Single(report!.Removed, r => r.Tenant == tenant).Content.Sha256);
        Assert.Null(await IntactAsync(tenant, text));
    }
}

/// <summary>EvidenceSweep:* settings a node cannot run with stop it at start with exit code 78, saying which setting.</summary>
public sealed class SweepSettingAttackTests(Xunit.Abstractions.ITestOutputHelper output) : IAsyncLifetime
{
    private readonly TestDatabase _database = new();
    private readonly string _keyPath = Path.Combine(Path.GetTempPath(), "sbx-sweep-key-" + Guid.NewGuid().ToString("N")[..8] + ".json");

    public async Task InitializeAsync()
    {
        await _database.CreateAsync();
        Sandbox.Audited.Api.Auth.DevelopmentKeys.Create(_keyPath);
    }

    public async Task DisposeAsync()
    {
        await _database.DisposeAsync();
        File.Delete(_keyPath);
    }

    // A pass every 58 days: more than a timer takes (about 49.7 days); the sweep's timer was made before anything checked it.
    [Fact]
    public async Task AnIntervalLongerThanATimerTakesIsRefusedAtStartWithExitCode78()
    {
        var (exitCode, log) = await Sandbox.Audited.Tests.Executor.ServiceProcess.RunToExitAsync(
            new Sandbox.Audited.Tests.Executor.ServiceProcess.Setup(_database, _keyPath, "sweep-interval"),
            new Dictionary<string, string> { ["EvidenceSweep__IntervalSeconds"] = "5000000" }, TimeSpan.FromSeconds(60));
        output.WriteLine(log.Length > 6000 ? log[..6000] : log);

        Assert.Equal(78, exitCode);
        Assert.Contains("sandbox-audited: not starting (exit code 78): EvidenceSweep:IntervalSeconds", log, StringComparison.Ordinal);
        Assert.DoesNotContain("Unhandled exception", log, StringComparison.Ordinal);
    }
}
