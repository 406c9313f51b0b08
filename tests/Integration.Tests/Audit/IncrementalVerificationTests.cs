using System.Net;
using System.Text.Json.Nodes;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Audit;

/// <summary>GET /v1/audit/verify?sinceCheckpoint=true: only what was written after the last checkpoint is read.</summary>
[Collection(ServiceCollection.Name)]
public sealed class IncrementalVerificationTests(ServiceFixture service)
{
    private async Task<long> CheckpointAsync(string tenant)
    {
        var response = await service.Auditor(tenant).PostAsync("/v1/audit/checkpoints", null);
        var body = await ApiCalls.BodyAsync(response);
        Assert.True(response.StatusCode == HttpStatusCode.Created, body.ToJsonString());
        return body["toSequence"]!.GetValue<long>();
    }

    private Task<JsonNode> SinceAsync(string tenant) => service.Auditor(tenant).OkJsonAsync("/v1/audit/verify?sinceCheckpoint=true");

    [Fact]
    public async Task OnlyTheNewEventsAreReadAndEachTouchedStreamResumesFromItsCommittedLeaf()
    {
        var tenant = AuditTestClient.NewTenant("since");
        await AuditSeed.RunAsync(service, tenant, "ivy");
        await service.Auditor(tenant).OkJsonAsync("/v1/audit/runs");
        var to = await CheckpointAsync(tenant);
        var later = await AuditSeed.RunAsync(service, tenant, "ivy");
        await service.Auditor(tenant).OkJsonAsync("/v1/audit/runs");

        // New events: the later run's 8 plus the access log's reads since the checkpoint (an older stream, resumed).
        var newEvents = await service.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.audit_event_owner WHERE tenant = $1 AND seq_id > $2", tenant, to);
        var touched = await service.Database.ScalarAsync<long>(
            "SELECT count(DISTINCT stream_id) FROM sandbox.audit_event_owner WHERE tenant = $1 AND seq_id > $2", tenant, to);
        var all = await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.audit_event_owner WHERE tenant = $1", tenant);
        var report = await SinceAsync(tenant);

        Assert.True(report["verified"]!.GetValue<bool>(), report.ToJsonString());
        Assert.Equal(newEvents, report["eventsChecked"]!.GetValue<long>());
        Assert.Equal(touched, report["streamsChecked"]!.GetValue<long>());
        Assert.True(newEvents >= 9 && newEvents < all && touched >= 2, $"{newEvents} new of {all} in {touched} streams");
        Assert.Equal(0, await service.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.mt_events WHERE stream_id = $1 AND seq_id <= $2", later, to));
    }

    [Fact]
    public async Task ATamperAfterTheCheckpointIsCaught()
    {
        var tenant = AuditTestClient.NewTenant("since-tamper");
        await AuditSeed.RunAsync(service, tenant, "jay");
        await CheckpointAsync(tenant);
        var damaged = await AuditSeed.RunAsync(service, tenant, "jay");
        Assert.True((await SinceAsync(tenant))["verified"]!.GetValue<bool>());

        await AuditSeed.TamperAsync(service,
            "UPDATE sandbox.mt_events SET data = jsonb_set(data, '{stdout,sha256}', '\"0000\"') WHERE stream_id = $1 AND version = 6", damaged);
        var report = await SinceAsync(tenant);

        Assert.False(report["verified"]!.GetValue<bool>());
        Assert.Equal(damaged.ToString(), report.Str("firstBroken.runId"));
        Assert.Equal("6", report.Str("firstBroken.version"));
        Assert.Contains("hash mismatch", report.Str("firstBroken.reason"));
    }

    [Fact]
    public async Task AnAnchorThatNoLongerMatchesItsCommittedLeafIsCaught()
    {
        var tenant = AuditTestClient.NewTenant("since-anchor");
        await AuditSeed.RunAsync(service, tenant, "kim");
        await service.Auditor(tenant).OkJsonAsync("/v1/audit/runs"); // the access log's stream, before and after
        var to = await CheckpointAsync(tenant);
        await service.Auditor(tenant).OkJsonAsync("/v1/audit/runs");
        // The access log's last event before the checkpoint: its stored hash is rewritten, its successor relinked to it.
        var anchor = await service.Database.ScalarAsync<long>("""
            SELECT max(o.seq_id) FROM sandbox.audit_event_owner o
            WHERE o.tenant = $1 AND o.seq_id <= $2
              AND o.stream_id IN (SELECT stream_id FROM sandbox.audit_event_owner WHERE tenant = $1 AND seq_id > $2)
            """, tenant, to);
        Assert.True(anchor > 0, "no stream of the tenant was touched on both sides of the checkpoint");
        await AuditSeed.TamperAsync(service,
            "UPDATE sandbox.mt_events SET headers = jsonb_set(headers, '{hash}', '\"" + new string('0', 64) + "\"') WHERE seq_id = $1", anchor);

        var report = await SinceAsync(tenant);

        Assert.False(report["verified"]!.GetValue<bool>());
        Assert.Contains("checkpoint's tree committed", report.Str("firstBroken.reason"));
    }

    [Fact]
    public async Task AStoredLeafTheLastCheckpointAddedThatNoLongerMatchesItsEventIsCaught()
    {
        var tenant = AuditTestClient.NewTenant("since-leaf");
        await AuditSeed.RunAsync(service, tenant, "lou");
        await CheckpointAsync(tenant);
        var run = await AuditSeed.RunAsync(service, tenant, "lou");
        await CheckpointAsync(tenant);
        Assert.True((await SinceAsync(tenant))["verified"]!.GetValue<bool>());

        // The event's stored hash header rewritten after the second checkpoint added its leaf.
        await AuditSeed.TamperAsync(service,
            "UPDATE sandbox.mt_events SET headers = jsonb_set(headers, '{hash}', '\"" + new string('1', 64) + "\"') WHERE stream_id = $1 AND version = 8", run);
        var report = await SinceAsync(tenant);

        Assert.False(report["verified"]!.GetValue<bool>());
        Assert.Contains(report["broken"]!.AsArray(), b => b!.Str("reason").Contains("stored tree leaf", StringComparison.Ordinal));
    }

    [Fact]
    public async Task SinceCheckpointTakesNoOtherScope() =>
        Assert.Equal(HttpStatusCode.BadRequest,
            (await service.Auditor(AuditTestClient.NewTenant("since-bad")).GetAsync("/v1/audit/verify?sinceCheckpoint=true&fromSequence=3")).StatusCode);
}
