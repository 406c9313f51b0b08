using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Tests.Audit;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Evidence;

/// <summary>
/// An api-only node (no engine: the executors here are rows the tests write, as a node that is gone leaves them), its sweep
/// run only when a test calls it, and a short abandon grace so that it records a silent executor's runs abandoned in seconds.
/// </summary>
public sealed class ReleaseHoldsFixture : ServiceFixture
{
    public const int AbandonGraceSeconds = 3;

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Node:Roles"] = "api",
        ["EvidenceSweep:Enabled"] = "false",
        ["Queue:HeartbeatSeconds"] = "1",
        ["Queue:LeaseSeconds"] = "2",
        ["Queue:AbandonGraceSeconds"] = AbandonGraceSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture),
        ["Admission:MaxQueueWaitMs"] = "4000",
        ["RateLimit:BurstLimit"] = "1000",
    };

    public EvidenceSweeper Sweeper => Services.GetRequiredService<EvidenceSweeper>();
}

[CollectionDefinition(Name)]
public sealed class ReleaseHoldsCollection : ICollectionFixture<ReleaseHoldsFixture>
{
    public const string Name = "release-holds";
}

/// <summary>
/// `evidence release-holds NODE` (what `./sbx evidence release-holds` runs), as the Api dll's command in a process of its
/// own: the holds of an executor that never comes back keep their content until an operator releases them; then the sweep
/// removes what no event names, and keeps what an event names. A live node, a node with a run still claimed, and an id
/// that is no node id are refused.
/// </summary>
[Collection(ReleaseHoldsCollection.Name)]
public sealed class ReleaseHoldsTests(ReleaseHoldsFixture service)
{
    private static string Sha(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));

    private Task<long> StoredAsync(string tenant, string text) => service.Database.ScalarAsync<long>(
        "SELECT count(*) FROM sandbox.evidence_blobs WHERE tenant = $1 AND sha256 = $2", tenant, Sha(text));

    private Task<long> HoldsAsync(string node) => service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.evidence_holds WHERE node = $1", node);

    private Task<long> ReleasesAsync(string node) => service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.evidence_node_releases WHERE node = $1", node);

    private Task PutAsync(string tenant, string text, Guid runId, string node) => service.Services.GetRequiredService<EvidenceStore>()
        .PutAsync(tenant, Encoding.UTF8.GetBytes(text), new ContentHold(runId, node), CancellationToken.None);

    // An executor that registered a day ago and last heartbeated two hours ago (plus a little: its holds, aged below, are older).
    private Task GoneNodeAsync(string node) => service.Database.ExecuteAsync(
        "INSERT INTO sandbox.nodes (node_id, roles, started_at, heartbeat_at) VALUES ($1, 'executor', now() - interval '1 day', now() - interval '2 hours' + interval '10 seconds')",
        node);

    // Two hours pass for the tenant's contents and holds: older than the sweep's grace (one hour).
    private Task AgeAsync(string tenant) => service.Database.ExecuteAsync($"""
        ALTER TABLE sandbox.evidence_blobs DISABLE TRIGGER sbx_evidence_blobs_guard;
        UPDATE sandbox.evidence_blobs SET stored_at = stored_at - interval '2 hours' WHERE tenant = '{tenant}';
        ALTER TABLE sandbox.evidence_blobs ENABLE TRIGGER sbx_evidence_blobs_guard;
        UPDATE sandbox.evidence_holds SET held_at = held_at - interval '2 hours' WHERE tenant = '{tenant}';
        """);

    /// <summary>
    /// A run recorded by this node and claimed by the given executor, as that executor's claim leaves the queue row (the
    /// request waits for it: its task is returned). leaseSeconds negative: the lease already ran out.
    /// </summary>
    private async Task<(Guid RunId, Task<(HttpResponseMessage Response, System.Text.Json.Nodes.JsonNode Body)> Request)> ClaimedRunAsync(
        string tenant, string node, string input, int leaseSeconds)
    {
        var request = service.Runner("sam", tenant).RunAsync(new { language = "shell", code = "cat in.txt", files = new[] { new { name = "in.txt", content = input } } });
        Guid? runId = null;
        await Eventually.WaitUntilAsync(async () =>
            {
                runId = await service.Database.ScalarAsync<Guid?>("SELECT run_id FROM sandbox.run_queue WHERE tenant = $1 AND state = 'queued'", tenant);
                return runId is not null || request.IsCompleted;
            },
            () => "the run was not queued", TimeSpan.FromSeconds(20), pollMs: 20);
        Assert.False(request.IsCompleted, $"the request ended before it was queued: {(request.IsCompleted ? request.Result.Body.ToJsonString() : "")}");
        await service.Database.ExecuteAsync(
            "UPDATE sandbox.run_queue SET state = 'claimed', node_id = $2, claimed_at = now(), lease_until = now() + make_interval(secs => $3) WHERE run_id = $1 AND state = 'queued'",
            runId!.Value, node, (double)leaseSeconds);
        Assert.Equal("claimed", await service.Database.ScalarAsync<string>("SELECT state FROM sandbox.run_queue WHERE run_id = $1", runId.Value));
        return (runId.Value, request);
    }

    private async Task WaitAbandonedAsync(Guid runId) => await Eventually.WaitUntilAsync(
        async () => await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'run_abandoned'", runId) == 1,
        () => $"run {runId} of the silent executor was not recorded abandoned", TimeSpan.FromSeconds(30));

    /// <summary>The Api dll's command in a process of its own, configured as `./sbx` configures it (environment variables).</summary>
    private async Task<(int Code, string Out, string Err)> ReleaseHoldsAsync(string node, string? connection = null)
    {
        var info = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = AppContext.BaseDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[] { Path.Combine(AppContext.BaseDirectory, "Sandbox.Audited.Api.dll"), "evidence", "release-holds", node })
            info.ArgumentList.Add(arg);
        info.Environment["ConnectionStrings__Sandbox"] = connection ?? service.Database.AppConnection;
        info.Environment.Remove("ConnectionStrings__Admin");
        info.Environment["Queue__AbandonGraceSeconds"] = ReleaseHoldsFixture.AbandonGraceSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        info.Environment["Executor__NodeId"] = "operator-console";
        using var process = Process.Start(info)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(limit.Token);
        return (process.ExitCode, await output, await error);
    }

    [Fact]
    public async Task TheHoldsOfAnExecutorThatNeverComesBackAreReleasedAndTheSweepRemovesOnlyWhatNoEventNames()
    {
        var tenant = AuditTestClient.NewTenant("release");
        var gone = "gone-" + Guid.NewGuid().ToString("N")[..8];
        var id = Guid.NewGuid().ToString("N")[..8];
        string input = $"input of the run the gone node held {id}", artifact = $"artifact the gone node streamed {id}",
            shared = $"bytes another run's request names {id}";
        await GoneNodeAsync(gone);

        // Another run's request names the shared bytes (no executor takes it: it is refused, its request stays recorded).
        var (other, _) = await service.Runner("ann", tenant).RunAsync(new { language = "shell", code = "true", files = new[] { new { name = "x.txt", content = shared } } });
        Assert.Equal(HttpStatusCode.TooManyRequests, other.StatusCode);

        // The gone executor claimed a run and streamed its artifact, and the shared bytes, before it went silent for good; a
        // live node records the run abandoned (its journal, on the lost machine, never brings the outcome).
        var (runId, request) = await ClaimedRunAsync(tenant, gone, input, leaseSeconds: -60);
        await PutAsync(tenant, artifact, runId, gone);
        await PutAsync(tenant, shared, runId, gone);
        await WaitAbandonedAsync(runId);
        await request.WaitAsync(TimeSpan.FromSeconds(30));
        await AgeAsync(tenant);
        Assert.Equal(2, await HoldsAsync(gone));

        // Without the release the sweep keeps them: the node is silent, and a silent node may come back with its journal.
        await service.Sweeper.PassAsync(CancellationToken.None);
        Assert.Equal(1, await StoredAsync(tenant, artifact));
        Assert.Equal(2, await HoldsAsync(gone));

        var (code, output, error) = await ReleaseHoldsAsync(gone);
        Assert.True(code == 0, $"exit {code}: {error}{output}");
        Assert.Matches($@"Node '{gone}' \(last heartbeat (119 min|2 h) ago\) is released: its 2 hold\(s\) in 1 tenant\(s\)", output);
        Assert.Contains($"tenant {tenant}: 2 hold(s)", output);
        Assert.Contains("This command removed nothing", output);
        // The command removes nothing itself; its word is kept, and logged.
        Assert.Equal(1, await StoredAsync(tenant, artifact));
        Assert.Equal(2, await HoldsAsync(gone));
        Assert.Equal(1, await ReleasesAsync(gone));
        Assert.Equal(1, await service.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.logs WHERE message LIKE $1 AND node = 'operator-console'", $"%holds of node {gone} released by%"));

        var report = await service.Sweeper.PassAsync(CancellationToken.None);

        Assert.NotNull(report);
        Assert.Equal(0, report.TenantsFailed);
        Assert.Equal(0, await StoredAsync(tenant, artifact));
        Assert.Equal(0, await HoldsAsync(gone));
        // Named by events (the run's own request, another run's request): never removed.
        Assert.Equal(1, await StoredAsync(tenant, input));
        Assert.Equal(1, await StoredAsync(tenant, shared));
        var (_, swept) = Assert.Single(report.Removed, r => r.Tenant == tenant);
        Assert.Equal(Sha(artifact), swept.Sha256);
        Assert.Contains($"on node {gone}, whose holds an operator released", swept.Reason);
        Assert.Contains("an operator released", await service.Database.ScalarAsync<string>(
            "SELECT data::text FROM sandbox.mt_events WHERE type = 'evidence_swept' AND data -> 'caller' ->> 'tenant' = $1", tenant));

        // The record still verifies, and so does every content an event names.
        var auditor = service.Auditor(tenant);
        Assert.True((await auditor.OkJsonAsync("/v1/audit/verify"))["verified"]!.GetValue<bool>());
        var evidence = await auditor.OkJsonAsync("/v1/audit/evidence/verify");
        Assert.True(evidence["verified"]!.GetValue<bool>(), evidence.ToJsonString());

        // Again: nothing left to release, and nothing changes.
        var (again, againOutput, againError) = await ReleaseHoldsAsync(gone);
        Assert.True(again == 0, $"exit {again}: {againError}{againOutput}");
        Assert.Contains("holds no stored content: nothing to release", againOutput);
        Assert.DoesNotContain((await service.Sweeper.PassAsync(CancellationToken.None))!.Removed, r => r.Tenant == tenant);
        Assert.Equal(1, await StoredAsync(tenant, shared));
    }

    [Fact]
    public async Task ALiveNodeIsRefusedAndNothingOfItsIsTouched()
    {
        var tenant = AuditTestClient.NewTenant("release-live");
        string gone = "gone-" + Guid.NewGuid().ToString("N")[..8], live = "live-" + Guid.NewGuid().ToString("N")[..8];
        var text = $"held by a live node {Guid.NewGuid():N}";
        // A run recorded abandoned (its executor went silent), whose content a node that (re)started ten minutes ago still holds.
        await GoneNodeAsync(gone);
        await service.Database.ExecuteAsync("INSERT INTO sandbox.nodes (node_id, roles, started_at, heartbeat_at) VALUES ($1, 'executor', now() - interval '10 minutes', now())", live);
        var (runId, request) = await ClaimedRunAsync(tenant, gone, "in", leaseSeconds: -60);
        await WaitAbandonedAsync(runId);
        await request.WaitAsync(TimeSpan.FromSeconds(30));
        await PutAsync(tenant, text, runId, live);
        await AgeAsync(tenant);
        await service.Database.ExecuteAsync("UPDATE sandbox.nodes SET heartbeat_at = now() WHERE node_id = $1", live); // its latest heartbeat

        var (code, output, error) = await ReleaseHoldsAsync(live);

        Assert.True(code == 1, $"exit {code}: {error}{output}");
        Assert.Contains($"The holds of node '{live}' are not released: it heartbeated", error);
        Assert.Contains("within Queue:AbandonGraceSeconds (3 s)", error);
        Assert.DoesNotContain("claimed", error);
        Assert.Equal("", output);
        Assert.Equal(0, await ReleasesAsync(live));
        Assert.Equal(1, await HoldsAsync(live));
        Assert.Equal(1, await service.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.logs WHERE level = 'Warning' AND message LIKE $1", $"%holds of node {live} by % refused%"));
        await service.Sweeper.PassAsync(CancellationToken.None);
        Assert.Equal(1, await StoredAsync(tenant, text));
        Assert.Equal(1, await HoldsAsync(live));
    }

    [Fact]
    public async Task ANodeWithARunStillClaimedIsRefusedUntilTheRunIsRecordedAbandoned()
    {
        var tenant = AuditTestClient.NewTenant("release-claimed");
        var gone = "claimed-" + Guid.NewGuid().ToString("N")[..8];
        var artifact = $"artifact of a run still claimed {Guid.NewGuid():N}";
        await GoneNodeAsync(gone);
        // Its lease still runs: no node records it abandoned yet.
        var (runId, request) = await ClaimedRunAsync(tenant, gone, "in", leaseSeconds: 3600);
        await PutAsync(tenant, artifact, runId, gone);
        await AgeAsync(tenant);

        var (code, output, error) = await ReleaseHoldsAsync(gone);

        Assert.True(code == 1, $"exit {code}: {error}{output}");
        Assert.Contains($"the run queue still has 1 run(s) claimed by it ({runId})", error);
        Assert.DoesNotContain("heartbeated", error);
        Assert.Equal(0, await ReleasesAsync(gone));
        Assert.Equal(1, await HoldsAsync(gone));

        // The lease runs out: the running node records the run abandoned, and the release goes ahead.
        await service.Database.ExecuteAsync("UPDATE sandbox.run_queue SET lease_until = now() - interval '1 minute' WHERE run_id = $1", runId);
        await WaitAbandonedAsync(runId);
        await request.WaitAsync(TimeSpan.FromSeconds(30));
        var (then, thenOutput, thenError) = await ReleaseHoldsAsync(gone);
        Assert.True(then == 0, $"exit {then}: {thenError}{thenOutput}");
        Assert.Equal(1, await ReleasesAsync(gone));
        await service.Sweeper.PassAsync(CancellationToken.None);
        Assert.Equal(0, await StoredAsync(tenant, artifact));
    }

    [Theory]
    [InlineData("../etc")]
    [InlineData("-rf")]
    [InlineData("node\nforged")]
    public async Task AnIdThatIsNoNodeIdIsRefusedBeforeTheDatabaseIsReached(string id)
    {
        // A database nobody listens on: the refusal comes before any connection.
        var (code, output, error) = await ReleaseHoldsAsync(id, "Host=127.0.0.1;Port=1;Database=none;Username=none;Password=none;Timeout=2");

        Assert.True(code == 64, $"exit {code}: {error}{output}");
        Assert.Contains("is not a node id", error);
        Assert.Contains("Nothing was released", error);
        Assert.DoesNotContain("\nforged", error);
        Assert.Equal("", output);
    }

    [Fact]
    public async Task WithoutANodeIdTheCommandSaysHowToCallIt()
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false, WorkingDirectory = AppContext.BaseDirectory };
        foreach (var arg in new[] { Path.Combine(AppContext.BaseDirectory, "Sandbox.Audited.Api.dll"), "evidence", "release-holds" })
            info.ArgumentList.Add(arg);
        using var process = Process.Start(info)!;
        var error = await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.Equal(64, process.ExitCode);
        Assert.Contains("usage: sbx evidence release-holds NODE_ID", error);
    }
}
