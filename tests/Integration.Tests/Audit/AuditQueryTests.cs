using System.Net;
using System.Text.Json.Nodes;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Audit;

[Collection(ServiceCollection.Name)]
public sealed class AuditQueryTests(ServiceFixture service)
{
    private static List<JsonNode> Items(JsonNode page) => page["items"]!.AsArray().Select(i => i!).ToList();

    [Fact]
    public async Task RunsAreFilteredBySubjectLanguageStatusDecisionAndCode()
    {
        var tenant = AuditTestClient.NewTenant("query-runs");
        var a = await AuditSeed.RunAsync(service, tenant, "ann", "python", RunStatus.Succeeded, "print('a')");
        var b = await AuditSeed.RunAsync(service, tenant, "bob", "shell", RunStatus.Failed, "exit 1");
        var c = await AuditSeed.RunAsync(service, tenant, "bob", "python", RunStatus.Denied, "print('c')");
        await AuditSeed.RunAsync(service, AuditTestClient.NewTenant("elsewhere"), "bob", "python", RunStatus.Succeeded, "print('a')");
        var auditor = service.Auditor(tenant);

        async Task<List<string>> Ids(string query) =>
            Items(await auditor.OkJsonAsync("/v1/audit/runs?" + query)).Select(i => i.Str("runId")).ToList();

        Assert.Equal([a.ToString(), b.ToString(), c.ToString()], await Ids(""));
        Assert.Equal([b.ToString(), c.ToString()], await Ids("subject=bob"));
        Assert.Equal([a.ToString(), c.ToString()], await Ids("language=python"));
        Assert.Equal([b.ToString()], await Ids("status=failed"));
        Assert.Equal([c.ToString()], await Ids("decision=deny"));
        Assert.Equal([c.ToString()], await Ids("status=denied"));
        Assert.Equal([a.ToString()], await Ids("codeSha256=" + Sha256Hex.Of("print('a')")));
        Assert.Empty(await Ids("from=" + Uri.EscapeDataString(DateTimeOffset.UtcNow.AddMinutes(1).ToString("O"))));
        Assert.Equal(3, (await Ids("to=" + Uri.EscapeDataString(DateTimeOffset.UtcNow.AddMinutes(1).ToString("O")))).Count);

        var first = Items(await auditor.OkJsonAsync("/v1/audit/runs?subject=ann"))[0];
        Assert.Equal(("ann", tenant, "succeeded", "allow"), (first.Str("subject"), first.Str("tenant"), first.Str("status"), first.Str("decision")));
        Assert.Equal("25", first.Str("durationMs")); // as RunCompleted recorded it
    }

    [Fact]
    public async Task EventsAreFilteredByTypeSubjectAndTime()
    {
        var tenant = AuditTestClient.NewTenant("query-events");
        var run = await AuditSeed.RunAsync(service, tenant, "cara");
        await AuditSeed.RunAsync(service, tenant, "dan");
        var auditor = service.Auditor(tenant);

        var exits = Items(await auditor.OkJsonAsync("/v1/audit/events?type=sandbox_exited&subject=cara"));
        var all = Items(await auditor.OkJsonAsync("/v1/audit/events?limit=500&type=run_requested"));

        var exit = Assert.Single(exits);
        Assert.Equal(run.ToString(), exit.Str("streamId"));
        Assert.Equal("5", exit.Str("version"));
        Assert.Equal(64, exit.Str("hash").Length);
        Assert.Equal("0", exit.Str("data.exitCode"));
        Assert.Equal("cara", exit.Str("user"));
        Assert.Equal(2, all.Count);
        Assert.All(all, e => Assert.Equal(tenant, e.Str("tenant")));
        Assert.Empty(Items(await auditor.OkJsonAsync("/v1/audit/events?to=2000-01-01T00:00:00Z")));
    }

    [Fact]
    public async Task StoredOwnersAreDerivedFromEachStreamsFirstEventAndNeverChange()
    {
        var tenant = AuditTestClient.NewTenant("query-owner");
        await AuditSeed.RunAsync(service, tenant, "erin");
        await AuditSeed.RunAsync(service, tenant, "finn");

        // Every event has exactly the owner its stream's first event's caller gives: the rule, recomputed from events.
        var differing = await service.Database.ScalarAsync<long>("""
            SELECT count(*) FROM sandbox.mt_events e
            JOIN sandbox.mt_events f ON f.stream_id = e.stream_id AND f.version = 1
            LEFT JOIN sandbox.audit_event_owner o ON o.seq_id = e.seq_id
            WHERE f.data -> 'caller' ->> 'tenant' = $1
              AND (o.seq_id IS NULL OR o.stream_id <> e.stream_id OR o.type <> e.type
               OR o.tenant IS DISTINCT FROM f.data -> 'caller' ->> 'tenant'
               OR o.subject IS DISTINCT FROM f.data -> 'caller' ->> 'subject')
            """, tenant);
        Assert.Equal(0, differing);
        Assert.Equal(16, await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.audit_event_owner WHERE tenant = $1", tenant));

        var change = await Assert.ThrowsAsync<Npgsql.PostgresException>(() =>
            service.Database.ExecuteAsync("UPDATE sandbox.audit_event_owner SET tenant = 'someone-else' WHERE tenant = $1", tenant));
        Assert.Contains("append-only", change.MessageText);
        await Assert.ThrowsAsync<Npgsql.PostgresException>(() =>
            service.Database.ExecuteAsync("DELETE FROM sandbox.audit_event_owner WHERE tenant = $1", tenant));
    }

    [Fact]
    public async Task CursorPagingIsStableWhileEventsAreAppended()
    {
        var tenant = AuditTestClient.NewTenant("paging");
        for (var i = 0; i < 5; i++)
            await AuditSeed.RunAsync(service, tenant, "pia");
        var auditor = service.Auditor(tenant);

        var writer = Task.Run(async () =>
        {
            for (var i = 0; i < 15; i++)
                await AuditSeed.RunAsync(service, tenant, "pia");
        });
        var seen = new List<long>();
        string? cursor = null;
        while (true)
        {
            var page = await auditor.OkJsonAsync("/v1/audit/events?type=&subject=pia&limit=7" + (cursor is null ? "" : "&cursor=" + cursor));
            var items = Items(page).Select(e => long.Parse(e.Str("sequence"))).ToList();
            seen.AddRange(items);
            cursor = items.Count > 0 ? items[^1].ToString() : cursor;
            if (page["nextCursor"] is null && writer.IsCompleted)
            {
                // One more page after the writer finished picks up whatever settled meanwhile.
                var tail = await auditor.OkJsonAsync("/v1/audit/events?subject=pia&limit=500" + (cursor is null ? "" : "&cursor=" + cursor));
                seen.AddRange(Items(tail).Select(e => long.Parse(e.Str("sequence"))));
                break;
            }
        }
        await writer;

        var stored = await service.Database.ScalarAsync<long>("""
            SELECT count(*) FROM sandbox.mt_events e JOIN sandbox.mt_events f ON f.stream_id = e.stream_id AND f.version = 1
            WHERE f.data -> 'caller' ->> 'tenant' = $1 AND f.data -> 'caller' ->> 'subject' = 'pia'
            """, tenant);
        Assert.Equal(160, stored);
        Assert.Equal(seen.Order(), seen);
        Assert.Equal(seen.Count, seen.Distinct().Count());
        Assert.Equal(stored, seen.Count);
    }

    [Theory]
    [InlineData("/v1/audit/events?limit=501")]
    [InlineData("/v1/audit/events?limit=0")]
    [InlineData("/v1/audit/runs?cursor=abc")]
    [InlineData("/v1/audit/runs?from=yesterday")]
    [InlineData("/v1/audit/export?format=xml")]
    [InlineData("/v1/audit/runs?subject=%00")]
    [InlineData("/v1/audit/events?type=a%01b")]
    public async Task BadParametersAreRejected(string path)
    {
        var (response, body) = await service.Auditor("tenant-bad-params").GetJsonAsync(path);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("/problems/invalid-request", body.Str("type"));
    }

    [Fact]
    public async Task ARefusedQueryWithANulIsRecordedInTheAccessLog()
    {
        var tenant = AuditTestClient.NewTenant("nul");
        var auditor = service.Auditor(tenant, "nell");

        var (refused, _) = await auditor.GetJsonAsync("/v1/audit/runs?subject=%00eve&%00=1");
        var log = Items(await auditor.OkJsonAsync("/v1/audit/events?type=audit_accessed&subject=nell"));

        Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
        Assert.Equal(("query_runs", "400", "\\u0000eve", "1"),
            (log[0].Str("data.action"), log[0].Str("data.refusedWith"), log[0].Str("data.filter.subject"), log[0].Str("data.filter.\\u0000")));
    }

    [Theory]
    [InlineData(Roles.Runner)]
    [InlineData("none")]
    public async Task OnlyAuditorsAndAdminsReadTheAuditTrail(string role)
    {
        var client = service.Client(service.Token("rick", "tenant-roles", role));

        foreach (var path in new[] { "/v1/audit/runs", "/v1/audit/events", "/v1/audit/verify", "/v1/audit/export" })
            Assert.Equal(HttpStatusCode.Forbidden, (await client.GetAsync(path)).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await service.Client().GetAsync("/v1/audit/runs")).StatusCode);
    }

    [Fact]
    public async Task NoRoleReadsAnotherTenant()
    {
        var mine = AuditTestClient.NewTenant("mine");
        var theirs = AuditTestClient.NewTenant("theirs");
        var theirRun = await AuditSeed.RunAsync(service, theirs, "tom");
        var admin = service.Client(service.Token("ada", mine, Roles.Admin, Roles.Auditor));

        var (asked, _) = await admin.GetJsonAsync($"/v1/audit/events?tenant={theirs}");
        var runs = Items(await admin.OkJsonAsync("/v1/audit/runs?subject=tom"));
        var (direct, _) = await admin.GetJsonAsync($"/v1/runs/{theirRun}");

        Assert.Equal(HttpStatusCode.Forbidden, asked.StatusCode);
        Assert.Empty(runs);
        Assert.Equal(HttpStatusCode.NotFound, direct.StatusCode);
    }

    [Fact]
    public async Task EveryAuditReadIsRecordedInTheAccessLog()
    {
        var tenant = AuditTestClient.NewTenant("access");
        await AuditSeed.RunAsync(service, tenant, "eve");
        await AuditSeed.RunAsync(service, tenant, "eve");
        var auditor = service.Auditor(tenant, "olga");

        await auditor.OkJsonAsync("/v1/audit/runs?subject=eve&limit=1");
        await auditor.OkJsonAsync("/v1/audit/verify");
        var export = await auditor.GetAsync("/v1/audit/export?type=run_completed");
        await export.Content.ReadAsStringAsync();
        var log = Items(await auditor.OkJsonAsync("/v1/audit/events?type=audit_accessed&subject=olga"));

        Assert.Equal(["query_runs", "verify", "export"], log.Select(e => e.Str("data.action")));
        Assert.Equal(("olga", tenant, "eve", "1", "1"),
            (log[0].Str("data.caller.subject"), log[0].Str("data.caller.tenant"), log[0].Str("data.filter.subject"), log[0].Str("data.filter.limit"), log[0].Str("data.resultCount")));
        Assert.Equal("17", log[1].Str("data.resultCount")); // 16 run events + the access record of the first query
        Assert.Equal("2", log[2].Str("data.resultCount"));
        Assert.Single(log.Select(e => e.Str("streamId")).Distinct());
        // The access log is chained like a run, and this read itself is recorded too.
        var report = await auditor.OkJsonAsync("/v1/audit/verify?runId=" + log[0].Str("streamId"));
        Assert.True(report["verified"]!.GetValue<bool>());
        Assert.Equal(4, report["eventsChecked"]!.GetValue<long>());
    }

    [Fact]
    public async Task ConcurrentReadsAreAllRecordedOnOneChain()
    {
        var tenant = AuditTestClient.NewTenant("access-many");
        var auditor = service.Auditor(tenant, "quinn");

        await Task.WhenAll(Enumerable.Range(0, 12).Select(_ => auditor.OkJsonAsync("/v1/audit/events?type=run_requested")));
        var log = Items(await auditor.OkJsonAsync("/v1/audit/events?type=audit_accessed"));

        Assert.Equal(12, log.Count);
        Assert.Equal(Enumerable.Range(1, 12).Select(v => v.ToString()), log.Select(e => e.Str("version")).Order(StringComparer.Ordinal).OrderBy(int.Parse));
        Assert.True((await auditor.OkJsonAsync("/v1/audit/verify"))["verified"]!.GetValue<bool>());
    }
}
