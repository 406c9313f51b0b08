using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using Sandbox.Audited.Audit.Policies;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Policies;

/// <summary>Bundles written by the tests: forbid-wins, tightest limits, reloads, refusals, activations, replay.</summary>
[Collection(PolicyDirectoryCollection.Name)]
public sealed class PolicyDirectoryTests(PolicyDirectoryFixture service) : IAsyncLifetime
{
    private HttpClient Admin => service.Client(service.Token("policy-admin", "service", "admin"));

    // Every test starts from the base bundle, whatever the previous one left behind.
    public async Task InitializeAsync() => await service.UseBundleAsync(PolicyDirectoryFixture.BaseBundle);

    public Task DisposeAsync() => Task.CompletedTask;

    [Fact]
    public async Task ForbidWinsOverEveryMatchingPermit()
    {
        var client = service.Runner("mia", "t-forbid");

        var (denied, body) = await client.RunAsync(new { language = "shell", code = "echo no" });
        var (allowed, run) = await client.RunAsync(new { language = "python", code = "print('yes')" });

        Assert.Equal(HttpStatusCode.Forbidden, denied.StatusCode);
        Assert.Equal("no-shell-for-forbid-tenant", body["ruleIds"]!.AsArray().Single()!.ToString());
        Assert.Contains(body["reasons"]!.AsArray(), r => r!.ToString().StartsWith("forbidden by rule no-shell-for-forbid-tenant"));
        Assert.Equal(HttpStatusCode.OK, allowed.StatusCode);
        Assert.Equal("yes\n", run.Str("stdout.content"));
    }

    [Fact]
    public async Task TheTightestLimitOfTheMatchingPermitsAndCeilingsApplies()
    {
        var (response, run) = await service.Runner("noa", "t-tight").RunAsync(new
        {
            language = "python", code = "print('small')", limits = new { memoryMb = 400, pids = 200, timeoutMs = 55000, cpus = 1 },
        });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(["runners", "tight-tenant"], run["policy"]!["ruleIds"]!.AsArray().Select(r => r!.ToString()));
        Assert.Equal("96", run.Str("limits.memoryMb"));      // tight-tenant (96) under runners (256)
        Assert.Equal("32", run.Str("limits.pids"));          // only tight-tenant caps pids
        Assert.Equal("30000", run.Str("limits.timeoutMs"));  // runners (30000); above the ceiling (60000) would be a 400
        var memoryBytes = await service.Database.ScalarAsync<string>(
            "SELECT data -> 'settings' ->> 'memoryBytes' FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'sandbox_created'", Guid.Parse(run.Str("runId")));
        Assert.Equal((96L * 1024 * 1024).ToString(), memoryBytes);
    }

    [Fact]
    public async Task AnInvalidBundleIsRefusedRecordedAndTheOldOneStaysActive()
    {
        var before = service.DigestOnDisk;
        service.WriteFiles(new Dictionary<string, string>(PolicyDirectoryFixture.BaseBundle)
        {
            ["broken.yaml"] = "rules:\n  - id: half-written\n    effect: maybe\n",
        });

        var response = await Admin.PostAsync("/v1/policies/reload", null);
        var problem = await ApiCalls.BodyAsync(response);

        Assert.Equal(HttpStatusCode.UnprocessableEntity, response.StatusCode);
        Assert.Equal("/problems/policy-invalid", problem.Str("type"));
        Assert.Equal(before, problem.Str("activeDigest"));
        Assert.Contains(problem["errors"]!.AsArray(), e => e!.ToString().StartsWith("broken.yaml:3:"));
        var (_, active) = await Admin.GetJsonAsync("/v1/policies");
        Assert.Equal(before, active.Str("digest"));

        var rejection = (await service.ActivationEventsAsync()).Last(e => e.Type == "policy_bundle_rejected");
        var data = JsonNode.Parse(rejection.Data)!;
        Assert.Equal(before, data.Str("activeDigest"));
        Assert.Contains(data["errors"]!.AsArray(), e => e!.Str("file") == "broken.yaml" && e!.Str("line") == "3");

        var (ran, run) = await service.Runner("olga", "t-invalid").RunAsync(new { language = "shell", code = "echo still-works" });
        Assert.Equal(HttpStatusCode.OK, ran.StatusCode);
        Assert.Equal(before, run.Str("policy.bundleDigest"));
    }

    [Fact]
    public async Task StartupActivationIsRecordedWithDigestFilesAndStoredContent()
    {
        var events = await service.ActivationEventsAsync();

        var startup = events.Select(e => (e.Type, Data: JsonNode.Parse(e.Data)!))
            .First(e => e.Type == "policy_bundle_activated" && e.Data.Str("trigger") == "startup" && e.Data.Str("node") == service.NodeId).Data;
        var initial = PolicyBundle.FromFiles(PolicyDirectoryFixture.BaseBundle.Select(f => (f.Key, f.Value)).ToList());
        Assert.Equal(initial.Digest, startup.Str("digest"));
        Assert.Equal(initial.Files.Select(f => (f.Path, f.Sha256)),
            startup["files"]!.AsArray().Select(f => (f!.Str("path"), f!.Str("sha256"))));

        var stored = await service.Database.ScalarAsync<string>("SELECT files::text FROM sandbox.policy_bundles WHERE digest = $1", initial.Digest);
        Assert.Equal(PolicyDirectoryFixture.BaseYaml, JsonNode.Parse(stored!)!.AsArray().Single(f => f!.Str("path") == "base.yaml")!.Str("content"));

        // One hash chain over every activation and refusal, from every node.
        var previous = EventChain.Genesis;
        foreach (var e in events)
        {
            Assert.Equal(previous, e.PrevHash);
            previous = e.Hash;
        }
    }

    [Fact]
    public async Task ChangingAFileActivatesANewBundleAndRecordsIt()
    {
        var before = service.DigestOnDisk;
        var count = (await service.ActivationEventsAsync()).Count(e => e.Type == "policy_bundle_activated");
        service.WriteFiles(new Dictionary<string, string>(PolicyDirectoryFixture.BaseBundle)
        {
            ["extra.yaml"] = "rules:\n  - id: extra-permit\n    effect: permit\n    when: { tenants: [t-extra] }\n",
        });
        var expected = service.DigestOnDisk;

        // The watcher reloads on its own; wait (bounded) for it rather than asking.
        JsonNode? activation = null;
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (activation is null && DateTime.UtcNow < deadline)
        {
            activation = (await service.ActivationEventsAsync()).Where(e => e.Type == "policy_bundle_activated").Skip(count)
                .Select(e => JsonNode.Parse(e.Data)!).FirstOrDefault(d => d.Str("digest") == expected);
            if (activation is null)
                await Task.Delay(100);
        }

        Assert.NotNull(activation);
        Assert.Equal("file-change", activation.Str("trigger"));
        Assert.Equal(before, activation.Str("previousDigest"));
        Assert.Contains(activation["files"]!.AsArray(), f => f!.Str("path") == "extra.yaml");
        var (_, active) = await Admin.GetJsonAsync("/v1/policies");
        Assert.Equal(expected, active.Str("digest"));
        Assert.Contains(active["rules"]!.AsArray(), r => r!.Str("id") == "extra-permit");
    }

    [Fact]
    public async Task AdminReloadOfUnchangedFilesRecordsNoActivation()
    {
        var count = (await service.ActivationEventsAsync()).Count;

        var reload = await Admin.PostAsync("/v1/policies/reload", null);
        var body = await ApiCalls.BodyAsync(reload);

        Assert.Equal(HttpStatusCode.OK, reload.StatusCode);
        Assert.Equal("unchanged", body.Str("outcome"));
        Assert.Equal(count, (await service.ActivationEventsAsync()).Count);
    }

    [Fact]
    public async Task AdminReloadActivatesAndNamesTheAdmin()
    {
        service.WriteFiles(new Dictionary<string, string>(PolicyDirectoryFixture.BaseBundle)
        {
            ["admin.yaml"] = "rules:\n  - id: admin-permit\n    effect: permit\n    when: { tenants: [t-admin-only] }\n",
        });
        var expected = service.DigestOnDisk;

        var reload = await Admin.PostAsync("/v1/policies/reload", null);
        var body = await ApiCalls.BodyAsync(reload);

        Assert.Equal(HttpStatusCode.OK, reload.StatusCode);
        Assert.Equal(expected, body.Str("activeDigest"));
        // Either this request or the watcher activated it; each activation names its trigger.
        var activation = (await service.ActivationEventsAsync()).Select(e => JsonNode.Parse(e.Data)!).Last(d => d.Str("digest") == expected);
        Assert.Contains(activation.Str("trigger"), new[] { "admin:policy-admin", "file-change" });
        if (body.Str("outcome") == "activated")
            Assert.Equal("admin:policy-admin", activation.Str("trigger"));
    }

    [Fact]
    public async Task ReplayUsesTheBundleTheRunWasDecidedUnderEvenAfterItChanged()
    {
        var original = service.DigestOnDisk;
        var runner = service.Runner("pia", "t-replay");
        var auditor = service.Client(service.Token("quinn", "t-replay", "auditor"));
        var (_, run) = await runner.RunAsync(new { language = "python", code = "print('before')", limits = new { memoryMb = 300 } });
        var runId = run.Str("runId");

        var (firstStatus, first) = await auditor.GetJsonAsync($"/v1/audit/runs/{runId}/replay");
        Assert.Equal(HttpStatusCode.OK, firstStatus.StatusCode);
        Assert.Equal("true", first.Str("same"));

        var changed = await service.UseBundleAsync(new Dictionary<string, string>(PolicyDirectoryFixture.BaseBundle)
        {
            ["replay.yaml"] = "rules:\n  - id: no-replay-tenant\n    effect: forbid\n    when: { tenants: [t-replay] }\n",
        });
        Assert.NotEqual(original, changed);
        var now = await (await auditor.PostAsJsonAsync("/v1/policies/evaluate",
            new { subject = "pia", tenant = "t-replay", roles = new[] { "runner" }, language = "python", code = "print('before')" })).Content.ReadFromJsonAsync<JsonNode>();
        Assert.Equal("deny", now!.Str("decision"));

        var (status, replay) = await auditor.GetJsonAsync($"/v1/audit/runs/{runId}/replay");

        Assert.Equal(HttpStatusCode.OK, status.StatusCode);
        Assert.Equal("true", replay.Str("same"));
        Assert.Equal(original, replay.Str("bundleDigest"));
        Assert.Equal("allow", replay.Str("recorded.decision"));
        Assert.Equal("allow", replay.Str("replayed.decision"));
        Assert.Equal("256", replay.Str("replayed.limits.memoryMb"));

        // A run denied under the new bundle replays as a deny.
        var (denied, deniedBody) = await runner.RunAsync(new { language = "python", code = "print('after')" });
        Assert.Equal(HttpStatusCode.Forbidden, denied.StatusCode);
        var (_, deniedReplay) = await auditor.GetJsonAsync($"/v1/audit/runs/{deniedBody.Str("runId")}/replay");
        Assert.Equal("true", deniedReplay.Str("same"));
        Assert.Equal(changed, deniedReplay.Str("bundleDigest"));
        Assert.Equal("deny", deniedReplay.Str("replayed.decision"));
    }

    [Fact]
    public async Task ReplayIsForAuditorsAndAdminsOfTheRunsTenantOnly()
    {
        var runner = service.Runner("rosa", "t-replay-acl");
        var (_, run) = await runner.RunAsync(new { language = "shell", code = "echo acl" });
        var path = $"/v1/audit/runs/{run.Str("runId")}/replay";

        Assert.Equal(HttpStatusCode.Forbidden, (await runner.GetAsync(path)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await service.Client(service.Token("sam", "t-other", "auditor")).GetAsync(path)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await service.Client(service.Token("sam", "t-replay-acl", "admin")).GetAsync(path)).StatusCode);
    }

    [Fact]
    public async Task ReplayNoticesAStoredBundleThatWasTamperedWith()
    {
        var (_, run) = await service.Runner("tom", "t-tamper").RunAsync(new { language = "shell", code = "echo tamper" });
        var digest = run.Str("policy.bundleDigest");
        var fake = new string('f', 64);
        var files = await service.Database.ScalarAsync<string>("SELECT files::text FROM sandbox.policy_bundles WHERE digest = $1", digest);
        await service.Database.ExecuteAsync("INSERT INTO sandbox.policy_bundles (digest, files) VALUES ($1, $2::jsonb)", fake, files!);
        // The content cannot be changed in place, even by the owner of the table.
        await Assert.ThrowsAsync<PostgresException>(() => service.Database.ExecuteAsync(
            "UPDATE sandbox.policy_bundles SET files = '[]'::jsonb WHERE digest = $1", digest));

        var store = new PolicyBundleStore(service.Services.GetRequiredService<NpgsqlDataSource>());
        var tampered = await store.FindAsync(fake, CancellationToken.None);

        Assert.Throws<PolicyIntegrityException>(() => tampered!.ToBundle());
    }

    [Fact]
    public async Task ActivationsFromSeveralNodesExtendOneChain()
    {
        var documents = service.Services.GetRequiredService<IDocumentStore>();
        var dataSource = service.Services.GetRequiredService<NpgsqlDataSource>();
        var nodes = Enumerable.Range(0, 3).Select(_ => new PolicyActivationLog(documents, new PolicyBundleStore(dataSource))).ToList();
        var before = (await service.ActivationEventsAsync()).Count;

        await Task.WhenAll(nodes.Select((log, n) => Task.Run(async () =>
        {
            for (var i = 0; i < 4; i++)
                await log.RecordRejectionAsync([new PolicyError("x.yaml", i + 1, 1, "test")], null, "test", $"test-node-{n}", DateTimeOffset.UtcNow, CancellationToken.None);
        })));

        var events = await service.ActivationEventsAsync();
        Assert.Equal(before + 12, events.Count);
        var previous = EventChain.Genesis;
        foreach (var e in events)
        {
            Assert.Equal(previous, e.PrevHash);
            previous = e.Hash;
        }
    }
}
