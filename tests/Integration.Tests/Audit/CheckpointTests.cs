using System.Net;
using System.Text.Json.Nodes;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Audit;

/// <summary>
/// Checkpoints (Merkle tree heads over a tenant's events) catch what the per-run hash chain cannot: a run removed
/// whole, all its events and its stream row, by an insider with superuser rights.
/// </summary>
[Collection(ServiceCollection.Name)]
public sealed class CheckpointTests(ServiceFixture service)
{
    private async Task<JsonNode> CheckpointAsync(string tenant)
    {
        var response = await service.Auditor(tenant).PostAsync("/v1/audit/checkpoints", null);
        var body = await ApiCalls.BodyAsync(response);
        Assert.True(response.StatusCode == HttpStatusCode.Created, body.ToJsonString());
        return body;
    }

    /// <summary>Two runs of 8 events by mallory in a new tenant, then a checkpoint; the first run is the one to remove.</summary>
    private async Task<(string Tenant, Guid Removed, JsonNode Checkpoint)> TwoRunsAndACheckpointAsync(string prefix)
    {
        var tenant = AuditTestClient.NewTenant(prefix);
        var removed = await AuditSeed.RunAsync(service, tenant, "mallory");
        await AuditSeed.RunAsync(service, tenant, "mallory");
        return (tenant, removed, await CheckpointAsync(tenant));
    }

    private Task RemoveWholeRunAsync(Guid run) => AuditSeed.TamperAsync(service, $"""
        ALTER TABLE sandbox.mt_streams DISABLE TRIGGER USER;
        DELETE FROM sandbox.mt_streams WHERE id = '{run}';
        ALTER TABLE sandbox.mt_streams ENABLE TRIGGER USER
        """);

    [Fact]
    public async Task ACheckpointCoversTheTenantsEventsAndStillVerifiesAfterMoreRuns()
    {
        var tenant = AuditTestClient.NewTenant("checkpoint");
        await AuditSeed.RunAsync(service, tenant, "ann");
        await AuditSeed.RunAsync(service, tenant, "bob");

        var checkpoint = await CheckpointAsync(tenant);
        await AuditSeed.RunAsync(service, tenant, "ann");
        var report = await service.Auditor(tenant).OkJsonAsync("/v1/audit/checkpoints/verify");
        var list = (await service.Auditor(tenant).OkJsonAsync("/v1/audit/checkpoints")).AsArray();

        Assert.Equal("16", checkpoint.Str("treeSize")); // two runs of 8 events; nothing else of this tenant yet
        Assert.Matches("^[0-9a-f]{64}$", checkpoint.Str("rootHash"));
        Assert.True(report["verified"]!.GetValue<bool>(), report.ToJsonString());
        Assert.Equal(1, report["checkpointsChecked"]!.GetValue<int>());
        var listed = Assert.Single(list);
        Assert.Equal(checkpoint.Str("rootHash"), listed!.Str("rootHash"));
        Assert.Equal("audrey", listed!.Str("subject"));
        Assert.Equal(1L, await service.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.mt_events WHERE type = 'checkpoint_recorded' AND data -> 'caller' ->> 'tenant' = $1", tenant));
    }

    [Fact]
    public async Task AWholeRunRemovedByASuperuserPassesTheChainButNotTheCheckpoint()
    {
        var (tenant, removed, checkpoint) = await TwoRunsAndACheckpointAsync("checkpoint-delete");

        await RemoveWholeRunAsync(removed);
        var chain = await service.Auditor(tenant).OkJsonAsync("/v1/audit/verify");
        var report = await service.Auditor(tenant).OkJsonAsync("/v1/audit/checkpoints/verify");

        Assert.True(chain["verified"]!.GetValue<bool>(), "no link is broken: the run is simply gone");
        Assert.False(report["verified"]!.GetValue<bool>());
        Assert.Equal(checkpoint.Str("sequence"), report.Str("firstMismatch.checkpointSequence"));
        Assert.Equal("16", report.Str("firstMismatch.expectedTreeSize"));
        Assert.Equal("8", report.Str("firstMismatch.actualTreeSize"));
        Assert.NotEqual(report.Str("firstMismatch.expectedRootHash"), report.Str("firstMismatch.actualRootHash"));
    }

    [Fact]
    public async Task AHeadTheAuditorKeptCatchesARemovalEvenWhenTheCheckpointsAreRemovedToo()
    {
        var (tenant, removed, kept) = await TwoRunsAndACheckpointAsync("checkpoint-kept");
        var query = $"/v1/audit/checkpoints/verify?toSequence={kept.Str("toSequence")}&treeSize={kept.Str("treeSize")}&rootHash={kept.Str("rootHash")}";
        var before = await service.Auditor(tenant).OkJsonAsync(query);

        await RemoveWholeRunAsync(removed);
        await RemoveWholeRunAsync(Sandbox.Audited.Domain.Audit.CheckpointStreams.For(tenant));
        var recorded = await service.Auditor(tenant).OkJsonAsync("/v1/audit/checkpoints/verify");
        var after = await service.Auditor(tenant).OkJsonAsync(query);

        Assert.True(before["verified"]!.GetValue<bool>(), before.ToJsonString());
        Assert.Equal(0, recorded["checkpointsChecked"]!.GetValue<int>()); // nothing recorded is left to compare with
        Assert.False(after["verified"]!.GetValue<bool>());
        Assert.Equal("8", after.Str("firstMismatch.actualTreeSize"));
        // A root hash that is not hex is a malformed question, not evidence of tampering.
        var (malformed, problem) = await service.Auditor(tenant).GetJsonAsync(query.Replace($"rootHash={kept.Str("rootHash")}", "rootHash=" + new string('z', 64), StringComparison.Ordinal));
        Assert.Equal(HttpStatusCode.BadRequest, malformed.StatusCode);
        Assert.Contains("64 hex characters", problem.Str("detail"));
    }

    [Fact]
    public async Task AHeadIsSignedAndItsSignatureChecksOutWithThePublishedKey()
    {
        var (tenant, _, checkpoint) = await TwoRunsAndACheckpointAsync("checkpoint-signed");
        var key = await service.Auditor(tenant).OkJsonAsync("/v1/audit/checkpoints/key");

        using var ecdsa = System.Security.Cryptography.ECDsa.Create();
        ecdsa.ImportFromPem(key.Str("publicKeyPem"));
        var signed = System.Text.Encoding.UTF8.GetBytes(
            $"sandbox-audited checkpoint v1\n{tenant}\n{checkpoint.Str("toSequence")}\n{checkpoint.Str("treeSize")}\n{checkpoint.Str("rootHash")}\n");
        var signature = Convert.FromBase64String(checkpoint.Str("signature"));
        Assert.Equal(key.Str("keyId"), checkpoint.Str("keyId"));
        Assert.True(ecdsa.VerifyData(signed, signature, System.Security.Cryptography.HashAlgorithmName.SHA256));
        Assert.False(ecdsa.VerifyData((byte[])[.. signed, (byte)'x'], signature, System.Security.Cryptography.HashAlgorithmName.SHA256));
    }

    [Fact]
    public async Task ARecordedHeadRewrittenToMatchTheTamperedRecordFailsItsSignature()
    {
        var (tenant, removed, checkpoint) = await TwoRunsAndACheckpointAsync("checkpoint-forged");
        await RemoveWholeRunAsync(removed);
        var now = await service.Auditor(tenant).OkJsonAsync("/v1/audit/checkpoints/verify");

        // The insider rewrites the recorded head to what the tampered record gives now (and would have to re-chain it).
        await AuditSeed.TamperAsync(service,
            "UPDATE sandbox.mt_events SET data = jsonb_set(jsonb_set(data, '{treeSize}', to_jsonb($2::bigint)), '{rootHash}', to_jsonb($3::text)) WHERE seq_id = $1",
            long.Parse(checkpoint.Str("sequence")), long.Parse(now.Str("firstMismatch.actualTreeSize")), now.Str("firstMismatch.actualRootHash"));
        var report = await service.Auditor(tenant).OkJsonAsync("/v1/audit/checkpoints/verify");

        Assert.False(report["verified"]!.GetValue<bool>());
        Assert.Contains("signature does not verify", report.Str("firstMismatch.reason"));

        // Dropping the signature does not help either: with a checkpoint key configured, an unsigned head proves nothing.
        await AuditSeed.TamperAsync(service, "UPDATE sandbox.mt_events SET data = data - 'signature' WHERE seq_id = $1", long.Parse(checkpoint.Str("sequence")));
        var unsigned = await service.Auditor(tenant).OkJsonAsync("/v1/audit/checkpoints/verify");
        Assert.False(unsigned["verified"]!.GetValue<bool>());
        Assert.Contains("unsigned", unsigned.Str("firstMismatch.reason"));
    }

    [Theory]
    [InlineData("?toSequence=5")]
    [InlineData("?toSequence=5&treeSize=3&rootHash=abc")]
    [InlineData("?toSequence=x&treeSize=3&rootHash=0000000000000000000000000000000000000000000000000000000000000000")]
    public async Task AnIncompleteKeptHeadIsRefusedWith400(string query)
    {
        var (response, body) = await service.Auditor(AuditTestClient.NewTenant("checkpoint-bad")).GetJsonAsync("/v1/audit/checkpoints/verify" + query);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("/problems/invalid-request", body.Str("type"));
    }

    [Fact]
    public async Task ARunnerCannotRecordACheckpoint()
    {
        var response = await service.Client(service.Token("rita", AuditTestClient.NewTenant("checkpoint-runner"), Roles.Runner))
            .PostAsync("/v1/audit/checkpoints", null);

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
    }
}
