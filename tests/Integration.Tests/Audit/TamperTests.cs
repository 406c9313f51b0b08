using System.Net;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Audit;

/// <summary>An insider with superuser rights switches the append-only triggers off and edits history.</summary>
[Collection(ServiceCollection.Name)]
public sealed class TamperTests(ServiceFixture service)
{
    private async Task<(string Tenant, Guid Damaged, Guid Intact)> TwoRunsAsync()
    {
        var tenant = AuditTestClient.NewTenant("tamper");
        var damaged = await AuditSeed.RunAsync(service, tenant, "mallory");
        var intact = await AuditSeed.RunAsync(service, tenant, "mallory");
        return (tenant, damaged, intact);
    }

    private async Task<long> SequenceOfAsync(Guid run, int version) =>
        await service.Database.ScalarAsync<long>("SELECT seq_id FROM sandbox.mt_events WHERE stream_id = $1 AND version = $2", run, (long)version);

    [Fact]
    public async Task AnUntouchedTenantVerifies()
    {
        var (tenant, damaged, intact) = await TwoRunsAsync();

        var report = await service.Auditor(tenant).OkJsonAsync("/v1/audit/verify");

        Assert.True(report["verified"]!.GetValue<bool>());
        Assert.Equal(16, report["eventsChecked"]!.GetValue<long>());
        Assert.Equal(2, report["streamsChecked"]!.GetValue<long>());
        Assert.Null(report["firstBroken"]);
        Assert.True((await service.Auditor(tenant).OkJsonAsync($"/v1/audit/verify?runId={damaged}"))["verified"]!.GetValue<bool>());
        Assert.Equal(8, (await service.Auditor(tenant).OkJsonAsync($"/v1/audit/verify?runId={intact}"))["eventsChecked"]!.GetValue<long>());
    }

    [Fact]
    public async Task ChangedEventDataIsNamedByRunVersionAndReason()
    {
        var (tenant, damaged, _) = await TwoRunsAsync();
        var sequence = await SequenceOfAsync(damaged, 6);

        await AuditSeed.TamperAsync(service,
            "UPDATE sandbox.mt_events SET data = jsonb_set(data, '{stdout,sha256}', '\"0000\"') WHERE stream_id = $1 AND version = 6", damaged);
        var report = await service.Auditor(tenant).OkJsonAsync("/v1/audit/verify");

        Assert.False(report["verified"]!.GetValue<bool>());
        Assert.Equal(1, report["brokenStreams"]!.GetValue<long>());
        Assert.Equal(damaged.ToString(), report.Str("firstBroken.runId"));
        Assert.Equal("6", report.Str("firstBroken.version"));
        Assert.Equal(sequence.ToString(), report.Str("firstBroken.sequence"));
        Assert.Contains("hash mismatch", report.Str("firstBroken.reason"));
    }

    [Fact]
    public async Task ARunThatReallyRanAndWasEditedIsCaught()
    {
        var tenant = AuditTestClient.NewTenant("tamper-real");
        var (_, run) = await service.Runner("mallory", tenant).RunAsync(new { language = "shell", code = "echo 'pay 100'" });
        var id = Guid.Parse(run.Str("runId"));
        Assert.True((await service.Auditor(tenant).OkJsonAsync($"/v1/audit/verify?runId={id}"))["verified"]!.GetValue<bool>());

        await AuditSeed.TamperAsync(service,
            "UPDATE sandbox.mt_events SET data = jsonb_set(data, '{code}', '\"echo ''pay 1''\"') WHERE stream_id = $1 AND type = 'run_requested'", id);
        var report = await service.Auditor(tenant).OkJsonAsync($"/v1/audit/verify?runId={id}");

        Assert.False(report["verified"]!.GetValue<bool>());
        Assert.Equal(id.ToString(), report.Str("firstBroken.runId"));
        Assert.Equal("1", report.Str("firstBroken.version"));
    }

    [Fact]
    public async Task ADeletedMiddleEventIsNamedAsAGap()
    {
        var (tenant, damaged, _) = await TwoRunsAsync();

        await AuditSeed.TamperAsync(service, "DELETE FROM sandbox.mt_events WHERE stream_id = $1 AND version = 4", damaged);
        var report = await service.Auditor(tenant).OkJsonAsync("/v1/audit/verify");

        Assert.False(report["verified"]!.GetValue<bool>());
        Assert.Equal(damaged.ToString(), report.Str("firstBroken.runId"));
        Assert.Equal("5", report.Str("firstBroken.version"));
        Assert.Contains("version 4 is missing", report.Str("firstBroken.reason"));
    }

    [Fact]
    public async Task SwappedEventsAreNamedAsABrokenLink()
    {
        var (tenant, damaged, _) = await TwoRunsAsync();

        await AuditSeed.TamperAsync(service, """
            UPDATE sandbox.mt_events SET version = -3 WHERE stream_id = $1 AND version = 3;
            UPDATE sandbox.mt_events SET version = 3 WHERE stream_id = $1 AND version = 4;
            UPDATE sandbox.mt_events SET version = 4 WHERE stream_id = $1 AND version = -3;
            """, damaged);
        var report = await service.Auditor(tenant).OkJsonAsync("/v1/audit/verify");

        Assert.False(report["verified"]!.GetValue<bool>());
        Assert.Equal(damaged.ToString(), report.Str("firstBroken.runId"));
        Assert.Equal("3", report.Str("firstBroken.version"));
        Assert.Contains("prevHash does not match", report.Str("firstBroken.reason"));
    }

    [Fact]
    public async Task SwappedDataBetweenTwoEventsIsAHashMismatch()
    {
        var (tenant, damaged, _) = await TwoRunsAsync();

        await AuditSeed.TamperAsync(service, """
            UPDATE sandbox.mt_events a SET data = b.data, type = b.type
            FROM (SELECT version, data, type FROM sandbox.mt_events WHERE stream_id = $1 AND version IN (3, 4)) b
            WHERE a.stream_id = $1 AND a.version IN (3, 4) AND b.version = 7 - a.version
            """, damaged);
        var report = await service.Auditor(tenant).OkJsonAsync("/v1/audit/verify");

        Assert.Equal(damaged.ToString(), report.Str("firstBroken.runId"));
        Assert.Equal("3", report.Str("firstBroken.version"));
        Assert.Contains("hash mismatch", report.Str("firstBroken.reason"));
    }

    [Fact]
    public async Task ARemovedTailIsCaught()
    {
        var (tenant, damaged, _) = await TwoRunsAsync();

        await AuditSeed.TamperAsync(service, "DELETE FROM sandbox.mt_events WHERE stream_id = $1 AND version = 8", damaged);
        var report = await service.Auditor(tenant).OkJsonAsync("/v1/audit/verify");

        Assert.Equal(damaged.ToString(), report.Str("firstBroken.runId"));
        Assert.Contains("events removed at the end", report.Str("firstBroken.reason"));
    }

    [Fact]
    public async Task ARangeThatStartsAfterTheDamageStillVerifiesTheStreamFromItsStart()
    {
        var (tenant, damaged, _) = await TwoRunsAsync();
        var late = await SequenceOfAsync(damaged, 7);

        await AuditSeed.TamperAsync(service, "UPDATE sandbox.mt_events SET data = data || '{\"language\":\"shell\"}' WHERE stream_id = $1 AND version = 1", damaged);
        var report = await service.Auditor(tenant).OkJsonAsync($"/v1/audit/verify?fromSequence={late}&toSequence={late}");

        Assert.Equal(1, report["streamsChecked"]!.GetValue<long>());
        Assert.Equal(8, report["eventsChecked"]!.GetValue<long>());
        Assert.Equal(damaged.ToString(), report.Str("firstBroken.runId"));
        Assert.Equal("1", report.Str("firstBroken.version"));
    }

    [Fact]
    public async Task ADeletedFirstEventDoesNotHideTheRunFromItsTenant()
    {
        var (tenant, damaged, _) = await TwoRunsAsync();

        await AuditSeed.TamperAsync(service, "DELETE FROM sandbox.mt_events WHERE stream_id = $1 AND version = 1", damaged);
        var report = await service.Auditor(tenant).OkJsonAsync("/v1/audit/verify");

        Assert.Equal(damaged.ToString(), report.Str("firstBroken.runId"));
        Assert.Contains("version 1 is missing", report.Str("firstBroken.reason"));
    }

    [Fact]
    public async Task AnotherTenantsAuditorCannotVerifyOrSeeTheRun()
    {
        var (_, damaged, _) = await TwoRunsAsync();
        var stranger = service.Auditor(AuditTestClient.NewTenant("stranger"));

        var all = await stranger.OkJsonAsync("/v1/audit/verify");
        var (response, _) = await stranger.GetJsonAsync($"/v1/audit/verify?runId={damaged}");

        Assert.Equal(0, all["streamsChecked"]!.GetValue<long>());
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
    }
}
