using System.Net;
using System.Security.Cryptography;
using System.Text;
using Npgsql;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Tests.Audit;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Evidence;

/// <summary>
/// Erasure of content the store does not hold yet (a tombstone keeps it out from then on) and of the empty content (never
/// erased: it has no byte, and every run may produce it), through the eraser as `sbx erase` runs it and the public API.
/// </summary>
[Collection(ServiceCollection.Name)]
public sealed class ErasureTombstoneTests(ServiceFixture service)
{
    private static string Sha(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));

    private string EraserConnection => new NpgsqlConnectionStringBuilder(service.Database.AdminConnection) { Options = "-c role=sandbox_eraser" }.ConnectionString;

    private EvidenceEraser Eraser => new(EraserConnection, TimeProvider.System);

    private Task<long> ErasureEventsAsync(string tenant) => service.Database.ScalarAsync<long>(
        "SELECT count(*) FROM sandbox.mt_events WHERE type = 'evidence_erased' AND data -> 'caller' ->> 'tenant' = $1", tenant);

    [Fact]
    public async Task ADigestErasedBeforeItIsStoredIsKeptOutAndReadsAsErased()
    {
        var tenant = AuditTestClient.NewTenant("ev-tomb");
        var printed = "subject-record-77\n";
        var erasure = await Eraser.EraseAsync(tenant, [Sha(printed)], "dpo", "data-subject request 77", null, CancellationToken.None);
        Assert.Equal(Sha(printed), Assert.Single(erasure.KeptOut));
        Assert.Empty(erasure.Erased);
        Assert.Equal(1, await ErasureEventsAsync(tenant));
        Assert.Equal("dpo|data-subject request 77|", await service.Database.ScalarAsync<string>(
            "SELECT erased_by || '|' || erase_reason || '|' || coalesce(bytes::text, '') FROM sandbox.evidence_blobs WHERE tenant = $1 AND sha256 = $2 AND erased_at IS NOT NULL",
            tenant, Sha(printed)));

        // The run that prints it answers what it printed; the store never takes it, and every later read says erased.
        var (response, run) = await service.Runner("alice", tenant).RunAsync(new { language = "python", code = "print('subject-record-' + str(7 * 11))" });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(printed, run.Str("stdout.content"));
        Assert.Equal(0, await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.evidence_chunks WHERE tenant = $1 AND sha256 = $2", tenant, Sha(printed)));
        var (_, read) = await service.Runner("alice", tenant).GetJsonAsync($"/v1/runs/{run.Str("runId")}");
        Assert.Equal("erased", read.Str("stdout.encoding"));
        Assert.Equal("", read.Str("stdout.content"));

        // Verification counts the tombstone as erased (recorded), not as missing or changed content.
        var report = await service.Auditor(tenant).OkJsonAsync($"/v1/audit/evidence/verify?runId={run.Str("runId")}");
        Assert.True(report["verified"]!.GetValue<bool>());
        Assert.Equal(1, report["erased"]!.GetValue<int>());
        Assert.Equal("stdout", report["erasedItems"]![0]!.Str("role"));

        // Erasing it again records nothing new.
        var again = await Eraser.EraseAsync(tenant, [Sha(printed)], "dpo", "data-subject request 77", null, CancellationToken.None);
        Assert.Equal(Sha(printed), Assert.Single(again.AlreadyErased));
        Assert.Equal(1, await ErasureEventsAsync(tenant));
    }

    [Fact]
    public async Task AMalformedDigestIsRefusedBeforeAnythingIsRecorded()
    {
        var tenant = AuditTestClient.NewTenant("ev-tomb-typo");
        var refused = await Assert.ThrowsAsync<ArgumentException>(() =>
            Eraser.EraseAsync(tenant, [Sha("a"), "e3b0c442"], "dpo", "typo", null, CancellationToken.None));
        Assert.Contains("e3b0c442", refused.Message, StringComparison.Ordinal);
        Assert.Equal(0, await ErasureEventsAsync(tenant));
        Assert.Equal(0, await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.evidence_blobs WHERE tenant = $1", tenant));
    }

    [Fact]
    public async Task TheEmptyContentIsNeitherErasedNorPickedByRetention()
    {
        var tenant = AuditTestClient.NewTenant("ev-empty");
        var (_, run) = await service.Runner("alice", tenant).RunAsync(new { language = "python", code = "print(3)", classification = "internal" });

        // Retention of every run of the tenant (0 days): the code and stdout, never the empty stdin and stderr.
        var expired = await Eraser.ExpiredAsync(tenant, "internal", 0, CancellationToken.None);
        Assert.Contains(run.Str("stdout.sha256"), expired);
        Assert.DoesNotContain(EvidenceStore.EmptySha256, expired);

        var erasure = await Eraser.EraseAsync(tenant, [EvidenceStore.EmptySha256], "retention-job", "retention 0 d", "internal", CancellationToken.None);
        Assert.Equal(EvidenceStore.EmptySha256, Assert.Single(erasure.Empty));
        Assert.Empty(erasure.Erased);
        Assert.Empty(erasure.KeptOut);
        Assert.Equal(0, await ErasureEventsAsync(tenant));
        Assert.Equal(0, await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.evidence_blobs WHERE tenant = $1 AND erased_at IS NOT NULL", tenant));
    }

    [Fact]
    public async Task AnEmptyContentAnEarlierVersionMarkedErasedReadsAsEmpty()
    {
        var tenant = AuditTestClient.NewTenant("ev-empty-old");
        var (_, first) = await service.Runner("alice", tenant).RunAsync(new { language = "python", code = "print(4)" });
        // What an earlier version's eraser did to the empty content (migration 0097 now refuses it, so it is forced here).
        await service.Database.ExecuteAsync($"""
            BEGIN;
            ALTER TABLE sandbox.evidence_blobs DISABLE TRIGGER USER;
            ALTER TABLE sandbox.evidence_blobs DROP CONSTRAINT evidence_blobs_empty_never_erased;
            UPDATE sandbox.evidence_blobs SET erased_at = now(), erased_by = 'old', erase_reason = 'old' WHERE tenant = '{tenant}' AND sha256 = '{EvidenceStore.EmptySha256}';
            ALTER TABLE sandbox.evidence_blobs ADD CONSTRAINT evidence_blobs_empty_never_erased
                CHECK (erased_at IS NULL OR sha256 <> '{EvidenceStore.EmptySha256}') NOT VALID;
            ALTER TABLE sandbox.evidence_blobs ENABLE TRIGGER USER;
            COMMIT;
            """);
        Assert.Equal(1, await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.evidence_blobs WHERE tenant = $1 AND sha256 = $2 AND erased_at IS NOT NULL", tenant, EvidenceStore.EmptySha256));

        var (_, read) = await service.Runner("alice", tenant).GetJsonAsync($"/v1/runs/{first.Str("runId")}");
        Assert.Equal("utf8", read.Str("stderr.encoding"));
        Assert.Equal("", read.Str("stderr.content"));
        var report = await service.Auditor(tenant).OkJsonAsync($"/v1/audit/evidence/verify?runId={first.Str("runId")}");
        Assert.True(report["verified"]!.GetValue<bool>());
        Assert.Equal(0, report["erased"]!.GetValue<int>());
        using var reproduce = await service.Runner("alice", tenant).PostAsync($"/v1/runs/{first.Str("runId")}/reproduce", null);
        Assert.Equal(HttpStatusCode.OK, reproduce.StatusCode);
    }

    [Fact]
    public async Task TheServiceCannotAddAnErasedRowAndTheEraserAddsOnlyTombstones()
    {
        var tenant = AuditTestClient.NewTenant("ev-tomb-roles");
        var sha = Sha("x");
        await using (var app = new NpgsqlConnection(service.Database.AppConnection))
        {
            await app.OpenAsync();
            await using var forged = new NpgsqlCommand(
                "INSERT INTO sandbox.evidence_blobs (tenant, sha256, bytes, chunks, erased_at, erased_by, erase_reason) VALUES ($1, $2, 1, 0, now(), 'app', 'forged')", app);
            forged.Parameters.AddWithValue(tenant);
            forged.Parameters.AddWithValue(sha);
            Assert.Equal(PostgresErrorCodes.InsufficientPrivilege, (await Assert.ThrowsAsync<PostgresException>(() => forged.ExecuteNonQueryAsync())).SqlState);
        }
        await using var eraser = new NpgsqlConnection(EraserConnection);
        await eraser.OpenAsync();
        foreach (var (sql, state) in new[]
        {
            // Content with a size, a present row, chunks: none is the eraser's to add.
            ("INSERT INTO sandbox.evidence_blobs (tenant, sha256, bytes, chunks) VALUES ($1, $2, 1, 1)", PostgresErrorCodes.InsufficientPrivilege),
            ("INSERT INTO sandbox.evidence_blobs (tenant, sha256, chunks) VALUES ($1, $2, 0)", PostgresErrorCodes.CheckViolation),
            ("INSERT INTO sandbox.evidence_chunks (tenant, sha256, chunk_no, data) VALUES ($1, $2, 0, '\\x78'::bytea)", PostgresErrorCodes.InsufficientPrivilege),
        })
        {
            await using var command = new NpgsqlCommand(sql, eraser);
            command.Parameters.AddWithValue(tenant);
            command.Parameters.AddWithValue(sha);
            Assert.Equal(state, (await Assert.ThrowsAsync<PostgresException>(() => command.ExecuteNonQueryAsync())).SqlState);
        }
        Assert.Equal(0, await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.evidence_blobs WHERE tenant = $1", tenant));
    }
}
