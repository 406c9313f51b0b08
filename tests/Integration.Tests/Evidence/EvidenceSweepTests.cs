using System.Net;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Tests.Audit;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Evidence;

/// <summary>A node of its own (its journal folder), whose sweep runs only when a test calls it.</summary>
public sealed class EvidenceSweepFixture : ServiceFixture
{
    public string JournalDirectory { get; } = Path.Combine(Path.GetTempPath(), "sbx-test-journal-" + Guid.NewGuid().ToString("N")[..8]);

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Executor:JournalDirectory"] = JournalDirectory,
        ["EvidenceSweep:Enabled"] = "false",
        ["Queue:HeartbeatSeconds"] = "1",
        ["RateLimit:BurstLimit"] = "1000",
    };

    public EvidenceSweeper Sweeper => Services.GetRequiredService<EvidenceSweeper>();

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        if (Directory.Exists(JournalDirectory))
            Directory.Delete(JournalDirectory, recursive: true);
    }
}

[CollectionDefinition(Name)]
public sealed class EvidenceSweepCollection : ICollectionFixture<EvidenceSweepFixture>
{
    public const string Name = "evidence-sweep";
}

/// <summary>
/// Contents stored before a commit that then failed for good are named by no event; the sweep removes them and records
/// it, and leaves what an event names (even when a failed run stored the same bytes), what was stored within the grace,
/// and what an outcome waiting in a node's journal names.
/// </summary>
[Collection(EvidenceSweepCollection.Name)]
public sealed class EvidenceSweepTests(EvidenceSweepFixture service)
{
    private static string Sha(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));

    private Task<long> StoredAsync(string tenant, string text) => service.Database.ScalarAsync<long>(
        "SELECT count(*) FROM sandbox.evidence_blobs WHERE tenant = $1 AND sha256 = $2", tenant, Sha(text));

    // What a shell run that writes one artifact sends.
    private static object WritesArtifact(string name, string content) =>
        new { language = "shell", code = $"mkdir -p out && printf '%s' '{content}' > out/{name}" };

    [Fact]
    public async Task ContentNoEventNamesIsSweptWhileNamedFreshAndJournaledContentStays()
    {
        var tenant = AuditTestClient.NewTenant("sweep");
        var id = Guid.NewGuid().ToString("N")[..8];
        var runner = service.Runner("sam", tenant);
        string shared = $"shared input {id}", refusedInput = $"input of a request never recorded {id}",
            refusedArtifact = $"artifact of a run whose outcome was refused {id}", journaledArtifact = $"artifact of a journaled outcome {id}",
            freshInput = $"input refused a moment ago {id}";

        // The store refuses, for good (23514), a request carrying a file named refused-*.txt and the artifact refused-{id}.txt;
        // it refuses the artifact journal-{id}.txt as a read-only store does (25006), so that outcome waits in the journal.
        await service.Database.ExecuteAsync($"""
            CREATE FUNCTION sandbox.sweep_refuse_{id}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.type = 'artifact_recorded' AND NEW.data ->> 'name' = 'journal-{id}.txt' THEN
                    RAISE EXCEPTION 'read-only (test)' USING ERRCODE = '25006';
                END IF;
                RAISE EXCEPTION 'refused for good (test)' USING ERRCODE = '23514';
            END $$;
            CREATE TRIGGER sweep_refuse_{id} BEFORE INSERT ON sandbox.mt_events FOR EACH ROW
              WHEN ((NEW.type = 'run_requested' AND NEW.data::text LIKE '%refused-{id}%')
                 OR (NEW.type = 'artifact_recorded' AND NEW.data ->> 'name' IN ('refused-{id}.txt', 'journal-{id}.txt')))
              EXECUTE FUNCTION sandbox.sweep_refuse_{id}();
            """);

        // 1. Named: a run whose input is the shared bytes.
        var (named, namedRun) = await runner.RunAsync(new { language = "shell", code = "cat in.txt", files = new[] { new { name = "in.txt", content = shared } } });
        Assert.Equal(HttpStatusCode.OK, named.StatusCode);

        // 2. A request whose write-ahead commit is refused: its two files were stored first (one of them the shared bytes).
        var (refused, _) = await runner.RunAsync(new
        {
            language = "shell", code = "true",
            files = new[] { new { name = $"refused-{id}.txt", content = refusedInput }, new { name = "again.txt", content = shared } },
        });
        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);

        // 3. A run whose outcome commit is refused for good: its artifact was stored first; the run ends run_failed.
        var (_, failedRun) = await runner.RunAsync(WritesArtifact($"refused-{id}.txt", refusedArtifact));
        Assert.Equal("run_failed", await service.Database.ScalarAsync<string>(
            "SELECT string_agg(type, ',') FROM sandbox.mt_events WHERE stream_id = $1::uuid AND type IN ('run_completed', 'run_failed', 'run_abandoned')", failedRun.Str("runId")));

        // 4. A run whose outcome waits in this node's journal (202 recording): its artifact is stored, no event names it yet.
        var (journaled, journaledRun) = await runner.RunAsync(WritesArtifact($"journal-{id}.txt", journaledArtifact));
        Assert.Equal(HttpStatusCode.Accepted, journaled.StatusCode);
        Assert.Equal("recording", journaledRun.Str("status"));

        // 4b. The same on a node cut off from PostgreSQL right after it stored the content (its journal unseen, its heartbeat
        // stale since, once the two hours below have passed): a content its journaled outcome of that run names.
        var cutOff = "cut-off-" + id;
        string cutOffArtifact = $"artifact journaled on a node cut off {id}";
        await service.Database.ExecuteAsync(
            "INSERT INTO sandbox.nodes (node_id, roles, started_at, heartbeat_at) VALUES ($1, 'executor', now() - interval '1 day', now() - interval '2 hours' + interval '10 seconds')", cutOff);
        await service.Services.GetRequiredService<EvidenceStore>().PutAsync(tenant, Encoding.UTF8.GetBytes(cutOffArtifact),
            new ContentHold(Guid.Parse(journaledRun.Str("runId")), cutOff), CancellationToken.None);

        foreach (var text in new[] { shared, refusedInput, refusedArtifact, journaledArtifact, cutOffArtifact })
            Assert.Equal(1, await StoredAsync(tenant, text));

        // Two hours pass (for the contents, their holds and this node's start); the node's heartbeat then renews the holds of
        // what it still holds: the journaled run.
        await service.Database.ExecuteAsync($"""
            ALTER TABLE sandbox.evidence_blobs DISABLE TRIGGER sbx_evidence_blobs_guard;
            UPDATE sandbox.evidence_blobs SET stored_at = stored_at - interval '2 hours' WHERE tenant = '{tenant}';
            ALTER TABLE sandbox.evidence_blobs ENABLE TRIGGER sbx_evidence_blobs_guard;
            UPDATE sandbox.evidence_holds SET held_at = held_at - interval '2 hours' WHERE tenant = '{tenant}';
            UPDATE sandbox.nodes SET started_at = started_at - interval '2 hours' WHERE node_id = '{service.NodeId}';
            """);
        await Eventually.WaitUntilAsync(async () => await service.Database.ScalarAsync<bool>(
                "SELECT held_at > now() - interval '1 minute' FROM sandbox.evidence_holds WHERE tenant = $1 AND run_id = $2::uuid AND node = $3",
                tenant, journaledRun.Str("runId"), service.NodeId),
            () => "the node's heartbeat did not renew the hold of its journaled run", TimeSpan.FromSeconds(15));

        // 5. Refused a moment ago: inside the grace.
        var (fresh, _) = await runner.RunAsync(new { language = "shell", code = "true", files = new[] { new { name = $"refused-{id}-b.txt", content = freshInput } } });
        Assert.Equal(HttpStatusCode.ServiceUnavailable, fresh.StatusCode);

        var report = await service.Sweeper.PassAsync(CancellationToken.None);

        Assert.NotNull(report);
        Assert.Equal(0, report.TenantsFailed);
        Assert.Equal(0, await StoredAsync(tenant, refusedInput));
        Assert.Equal(0, await StoredAsync(tenant, refusedArtifact));
        Assert.Equal(0, await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.evidence_chunks WHERE tenant = $1 AND sha256 = ANY($2)",
            tenant, new[] { Sha(refusedInput), Sha(refusedArtifact) }));
        Assert.Equal(1, await StoredAsync(tenant, shared));
        Assert.Equal(1, await StoredAsync(tenant, journaledArtifact));
        Assert.Equal(1, await StoredAsync(tenant, cutOffArtifact));
        Assert.Equal(1, await StoredAsync(tenant, freshInput));

        // The removal is in the record: one evidence_swept on the tenant's evidence stream naming exactly the two, with why.
        var swept = System.Text.Json.Nodes.JsonNode.Parse((await service.Database.ScalarAsync<string>(
            "SELECT data::text FROM sandbox.mt_events WHERE type = 'evidence_swept' AND data -> 'caller' ->> 'tenant' = $1", tenant))!)!;
        var contents = swept["contents"]!.AsArray();
        Assert.Equal(new[] { Sha(refusedArtifact), Sha(refusedInput) }.Order(StringComparer.Ordinal), contents.Select(c => c!.Str("sha256")));
        Assert.Contains("never recorded", contents.Single(c => c!.Str("sha256") == Sha(refusedInput))!.Str("reason"));
        Assert.Contains($"run {failedRun.Str("runId")}", contents.Single(c => c!.Str("sha256") == Sha(refusedArtifact))!.Str("reason"));
        Assert.Equal(service.NodeId, swept.Str("node"));

        // The chain still verifies, and so does every content an event names (nothing named was removed).
        var auditor = service.Auditor(tenant);
        Assert.True((await auditor.OkJsonAsync("/v1/audit/verify"))["verified"]!.GetValue<bool>());
        var evidence = await auditor.OkJsonAsync("/v1/audit/evidence/verify");
        Assert.True(evidence["verified"]!.GetValue<bool>(), evidence.ToJsonString());

        // A second pass finds nothing more to do.
        var again = await service.Sweeper.PassAsync(CancellationToken.None);
        Assert.Empty(again!.Removed);

        // Once the store takes the journaled outcome, its artifact is named, and stays whatever the sweep decides later.
        await service.Database.ExecuteAsync($"DROP TRIGGER sweep_refuse_{id} ON sandbox.mt_events; DROP FUNCTION sandbox.sweep_refuse_{id}();");
        await Eventually.WaitUntilAsync(async () => await service.Database.ScalarAsync<long>(
                "SELECT count(*) FROM sandbox.mt_events WHERE stream_id = $1::uuid AND type = 'artifact_recorded'", journaledRun.Str("runId")) == 1,
            () => "the journal did not commit the outcome once the store took it", TimeSpan.FromSeconds(30));
        Assert.Equal(1, await StoredAsync(tenant, journaledArtifact));
    }

    [Fact]
    public async Task AContentAWriterReliesOnAtThatMomentIsLeftForTheNextPassAndTheRestGoes()
    {
        var tenant = AuditTestClient.NewTenant("sweep-busy");
        var id = Guid.NewGuid().ToString("N")[..8];
        string busy = $"relied on by a writer {id}", idle = $"relied on by nobody {id}";
        await service.Database.ExecuteAsync($"""
            CREATE FUNCTION sandbox.sweep_busy_{id}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'refused for good (test)' USING ERRCODE = '23514'; END $$;
            CREATE TRIGGER sweep_busy_{id} BEFORE INSERT ON sandbox.mt_events FOR EACH ROW
              WHEN (NEW.type = 'run_requested' AND NEW.data::text LIKE '%busy-{id}%') EXECUTE FUNCTION sandbox.sweep_busy_{id}();
            """);
        var (refused, _) = await service.Runner("sam", tenant).RunAsync(new
        {
            language = "shell", code = "true",
            files = new[] { new { name = $"busy-{id}.txt", content = busy }, new { name = "idle.txt", content = idle } },
        });
        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        await service.Database.ExecuteAsync($"""
            DROP TRIGGER sweep_busy_{id} ON sandbox.mt_events; DROP FUNCTION sandbox.sweep_busy_{id}();
            ALTER TABLE sandbox.evidence_blobs DISABLE TRIGGER sbx_evidence_blobs_guard;
            UPDATE sandbox.evidence_blobs SET stored_at = stored_at - interval '2 hours' WHERE tenant = '{tenant}';
            ALTER TABLE sandbox.evidence_blobs ENABLE TRIGGER sbx_evidence_blobs_guard;
            UPDATE sandbox.evidence_holds SET held_at = held_at - interval '2 hours' WHERE tenant = '{tenant}';
            """);

        // A commit that names the busy content is under way (it holds the writer's side of the key, as a staged insert does).
        await using var writer = new NpgsqlConnection(service.Database.AppConnection);
        await writer.OpenAsync();
        await using (var relying = await writer.BeginTransactionAsync())
        {
            await using (var rely = new NpgsqlCommand("SELECT sandbox.sbx_evidence_rely($1, $2)", writer, relying))
            {
                rely.Parameters.AddWithValue(tenant);
                rely.Parameters.AddWithValue(Sha(busy));
                await rely.ExecuteNonQueryAsync();
            }
            var report = await service.Sweeper.PassAsync(CancellationToken.None);
            Assert.Equal(1, report!.TenantsFailed);
            Assert.Equal(Sha(idle), Assert.Single(report.Removed, r => r.Tenant == tenant).Content.Sha256);
            Assert.Equal(1, await StoredAsync(tenant, busy));
            Assert.Equal(0, await StoredAsync(tenant, idle));
        }

        // The writer is gone without naming it: the next pass removes it.
        var next = await service.Sweeper.PassAsync(CancellationToken.None);
        Assert.Equal(Sha(busy), Assert.Single(next!.Removed, r => r.Tenant == tenant).Content.Sha256);
        Assert.Equal(0, await StoredAsync(tenant, busy));
        Assert.Equal(2, await service.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.mt_events WHERE type = 'evidence_swept' AND data -> 'caller' ->> 'tenant' = $1", tenant));
    }

    [Fact]
    public async Task AContentNoHoldAccountsForIsSweptOnlyWhenTheOperatorIncludesIt()
    {
        // As an earlier version left it: stored two hours ago, no hold, named by no event.
        var tenant = AuditTestClient.NewTenant("sweep-unheld");
        var text = $"stored by an earlier version {Guid.NewGuid():N}";
        await service.Database.ExecuteAsync($"""
            INSERT INTO sandbox.evidence_blobs (tenant, sha256, bytes, chunks) VALUES ('{tenant}', '{Sha(text)}', {text.Length}, 1);
            INSERT INTO sandbox.evidence_chunks (tenant, sha256, chunk_no, data) VALUES ('{tenant}', '{Sha(text)}', 0, convert_to('{text}', 'UTF8'));
            ALTER TABLE sandbox.evidence_blobs DISABLE TRIGGER sbx_evidence_blobs_guard;
            UPDATE sandbox.evidence_blobs SET stored_at = stored_at - interval '2 hours' WHERE tenant = '{tenant}';
            ALTER TABLE sandbox.evidence_blobs ENABLE TRIGGER sbx_evidence_blobs_guard;
            """);

        await service.Sweeper.PassAsync(CancellationToken.None);
        Assert.Equal(1, await StoredAsync(tenant, text));

        var including = new EvidenceSweeper(service.Services.GetRequiredService<NpgsqlDataSource>(), service.Services.GetRequiredService<Marten.IDocumentStore>(),
            new EvidenceSweepOptions { Enabled = false, IncludeUnheld = true }, service.NodeId, TimeProvider.System,
            Microsoft.Extensions.Logging.Abstractions.NullLogger<EvidenceSweeper>.Instance);
        var report = await including.PassAsync(CancellationToken.None);

        Assert.Equal(0, await StoredAsync(tenant, text));
        var (_, swept) = Assert.Single(report!.Removed, r => r.Tenant == tenant);
        Assert.Equal(Sha(text), swept.Sha256);
        Assert.Contains("no run holds it", swept.Reason);
    }

    [Fact]
    public async Task TheDatabaseRemovesOnlyContentNoEventNamesNoRunHoldsAndNoWriterReliesOn()
    {
        var tenant = AuditTestClient.NewTenant("sweep-guard");
        var text = $"named {Guid.NewGuid():N}";
        var (response, _) = await service.Runner("sam", tenant).RunAsync(new { language = "shell", code = "true", files = new[] { new { name = "in.txt", content = text } } });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);

        await using var app = new NpgsqlConnection(service.Database.AppConnection);
        await app.OpenAsync();
        await using (var recorded = await app.BeginTransactionAsync())
        {
            // Even with its holds deleted (the service's login may) and a record of its removal (0102), a named content stays.
            await using (var unhold = new NpgsqlCommand("DELETE FROM sandbox.evidence_holds WHERE tenant = $1", app, recorded))
            {
                unhold.Parameters.AddWithValue(tenant);
                await unhold.ExecuteNonQueryAsync();
            }
            await SweepRecords.AppendAsync(app, recorded, tenant, Sha(text));
            await using var sweep = new NpgsqlCommand("SELECT * FROM sandbox.sbx_evidence_sweep($1, $2)", app, recorded);
            sweep.Parameters.AddWithValue(tenant);
            sweep.Parameters.AddWithValue(new[] { Sha(text) });
            var refused = await Assert.ThrowsAsync<PostgresException>(() => sweep.ExecuteNonQueryAsync());
            Assert.Equal(PostgresErrorCodes.CheckViolation, refused.SqlState);
            Assert.Contains("named by an event", refused.MessageText);
        }
        await using (var sweepEmpty = new NpgsqlCommand("SELECT * FROM sandbox.sbx_evidence_sweep($1, $2)", app))
        {
            sweepEmpty.Parameters.AddWithValue(tenant);
            sweepEmpty.Parameters.AddWithValue(new[] { EvidenceStore.EmptySha256 });
            Assert.Equal(PostgresErrorCodes.CheckViolation, (await Assert.ThrowsAsync<PostgresException>(() => sweepEmpty.ExecuteNonQueryAsync())).SqlState);
        }
        await using (var delete = new NpgsqlCommand("DELETE FROM sandbox.evidence_chunks WHERE tenant = $1", app))
        {
            delete.Parameters.AddWithValue(tenant);
            Assert.Equal(PostgresErrorCodes.InsufficientPrivilege, (await Assert.ThrowsAsync<PostgresException>(() => delete.ExecuteNonQueryAsync())).SqlState);
        }
        Assert.Equal(1, await StoredAsync(tenant, text));

        // A content no event names and no run holds: while a writer relies on it (its transaction holds the shared key, as a
        // staged insert or a put does until its commit), the function refuses; once the writer is gone, it removes it.
        var unnamed = $"unnamed {Guid.NewGuid():N}";
        await using (var add = new NpgsqlCommand("INSERT INTO sandbox.evidence_blobs (tenant, sha256, bytes, chunks) VALUES ($1, $2, $3, 0)", app))
        {
            add.Parameters.AddWithValue(tenant);
            add.Parameters.AddWithValue(Sha(unnamed));
            add.Parameters.AddWithValue((long)unnamed.Length);
            await add.ExecuteNonQueryAsync();
        }
        await using var writer = new NpgsqlConnection(service.Database.AppConnection);
        await writer.OpenAsync();
        await using (var relying = await writer.BeginTransactionAsync())
        {
            await using (var rely = new NpgsqlCommand("SELECT sandbox.sbx_evidence_rely($1, $2)", writer, relying))
            {
                rely.Parameters.AddWithValue(tenant);
                rely.Parameters.AddWithValue(Sha(unnamed));
                await rely.ExecuteNonQueryAsync();
            }
            await using var busy = new NpgsqlCommand("SELECT * FROM sandbox.sbx_evidence_sweep($1, $2)", app);
            busy.Parameters.AddWithValue(tenant);
            busy.Parameters.AddWithValue(new[] { Sha(unnamed) });
            Assert.Equal(PostgresErrorCodes.LockNotAvailable, (await Assert.ThrowsAsync<PostgresException>(() => busy.ExecuteNonQueryAsync())).SqlState);
            Assert.Equal(1, await StoredAsync(tenant, unnamed));
        }
        await using (var recorded = await app.BeginTransactionAsync())
        {
            // With its record in the same transaction (migration 0102).
            await SweepRecords.AppendAsync(app, recorded, tenant, Sha(unnamed));
            await using var free = new NpgsqlCommand("SELECT count(*) FROM sandbox.sbx_evidence_sweep($1, $2)", app, recorded);
            free.Parameters.AddWithValue(tenant);
            free.Parameters.AddWithValue(new[] { Sha(unnamed) });
            Assert.Equal(1L, await free.ExecuteScalarAsync());
            await recorded.CommitAsync();
        }
        Assert.Equal(0, await StoredAsync(tenant, unnamed));
    }
}
