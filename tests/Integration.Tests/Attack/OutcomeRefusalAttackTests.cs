using System.Net;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Sandbox.Audited.Tests.Audit;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Attack;

public sealed class OutcomeRefusalFixture : ServiceFixture
{
    public string JournalDirectory { get; } = Path.Combine(Path.GetTempPath(), "sbx-test-journal-" + Guid.NewGuid().ToString("N")[..8]);

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Executor:JournalDirectory"] = JournalDirectory,
        ["RateLimit:BurstLimit"] = "1000",
    };

    /// <summary>Files a crash left in this node's journal before it started (unfinished writes, outputs no outcome names).</summary>
    public string[] Orphans { get; private set; } = [];

    /// <summary>An output a journaled outcome (of a run the store does not have: never committed) names by digest.</summary>
    public string Named { get; private set; } = "";

    public override async Task InitializeAsync()
    {
        var folder = Path.Combine(JournalDirectory, NodeId);
        Directory.CreateDirectory(folder);
        static string Sha(string text) => Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(text)));
        var (crashed, ghost) = (Guid.CreateVersion7(), Guid.CreateVersion7());
        Orphans =
        [
            Path.Combine(folder, $"{crashed:D}.{Sha("orphan")}.content"), // its outcome's file was committed and deleted, the crash came before this one's delete
            Path.Combine(folder, $"{crashed:D}.{Sha("half")}.content.tmp"), // copied, never renamed
            Path.Combine(folder, $"{crashed:D}.json.tmp"), // written, never renamed
        ];
        foreach (var orphan in Orphans)
            await File.WriteAllTextAsync(orphan, "orphan");
        Named = Path.Combine(folder, $"{ghost:D}.{Sha("named")}.content");
        await File.WriteAllTextAsync(Named, "named");
        var entry = Evidence.JournalForgeryTests.Forged(ghost, "tenant-orphans", "named");
        entry["contentFiles"] = new System.Text.Json.Nodes.JsonArray(new System.Text.Json.Nodes.JsonObject { ["sha256"] = Sha("named"), ["bytes"] = 5 });
        await File.WriteAllTextAsync(Path.Combine(folder, $"{ghost:D}.json"), entry.ToJsonString());
        await base.InitializeAsync();
    }

    /// <summary>The node's pools drop their connections: the next ones are new sessions (with the database's settings of now).</summary>
    public void ClearPools()
    {
        Services.GetRequiredService<Npgsql.NpgsqlDataSource>().Clear();
        ((Weasel.Postgresql.PostgresqlDatabase)Services.GetRequiredService<IDocumentStore>().Storage.Database).DataSource.Clear();
        Sandbox.Audited.Audit.Runs.GroupCommit.For(Services.GetRequiredService<IDocumentStore>()).Connections?.Clear(); // the run path's commits
    }
}

[CollectionDefinition(Name)]
public sealed class OutcomeRefusalCollection : ICollectionFixture<OutcomeRefusalFixture>
{
    public const string Name = "attack2-outcome-refusal";
}

/// <summary>
/// Attack on "only an outage goes to the journal": a store state that refuses writes for a while without being an outage
/// by Npgsql's definition (a read-only session, as clients of a demoted primary get during a failover: SQLSTATE 25006)
/// must not cost a run its true outcome, nor put the store's own text (SQL, table names) into the record.
/// </summary>
[Collection(OutcomeRefusalCollection.Name)]
public sealed class OutcomeRefusalAttackTests(OutcomeRefusalFixture service)
{
    [Fact]
    public async Task ARunEndingWhileTheStoreIsReadOnlyKeepsItsTrueOutcome()
    {
        var tenant = AuditTestClient.NewTenant("ro");
        using var runner = service.Runner("alice", tenant);
        var running = runner.RunAsync(new { language = "shell", code = "sleep 4; echo truthful" });
        await WaitInsideSandboxAsync(tenant);

        await service.Database.ExecuteOnServerAsync($"ALTER DATABASE {service.Database.Name} SET default_transaction_read_only = on");
        service.ClearPools();
        HttpResponseMessage response;
        System.Text.Json.Nodes.JsonNode body;
        try
        {
            (response, body) = await running;
        }
        finally
        {
            await service.Database.ExecuteOnServerAsync($"ALTER DATABASE {service.Database.Name} RESET default_transaction_read_only");
            service.ClearPools();
        }

        // The outcome is true and the store only refused writes for a while: it must be kept (202 "recording", committed later).
        Assert.True(response.StatusCode is HttpStatusCode.OK or HttpStatusCode.Accepted,
            $"the run's true outcome was not kept: {(int)response.StatusCode} {body.ToJsonString()}");
        var runId = body.Str("runId");
        string status = "", stdout = "";
        await Eventually.WaitUntilAsync(async () =>
        {
            var (_, run) = await runner.GetJsonAsync($"/v1/runs/{runId}");
            (status, stdout) = (run.Str("status"), run.Str("stdout.content"));
            return status == "succeeded";
        }, () => $"the record never got the run's true outcome (status {status}, stdout '{stdout}')", TimeSpan.FromSeconds(30), pollMs: 500);
        Assert.Equal("truthful\n", stdout);
    }

    [Fact]
    public async Task AStoreRefusalPutsNoSqlTextIntoTheRecordOrTheAnswer()
    {
        var tenant = AuditTestClient.NewTenant("ro-text");
        using var runner = service.Runner("alice", tenant);
        var running = runner.RunAsync(new { language = "shell", code = "sleep 3; echo fine" });
        await WaitInsideSandboxAsync(tenant);

        // Only the evidence tables refuse: the outcome (which stages its output with it) fails, the RunFailed saying why commits.
        await service.Database.ExecuteAsync("REVOKE INSERT ON sandbox.evidence_blobs FROM sandbox_app");
        HttpResponseMessage response;
        System.Text.Json.Nodes.JsonNode body;
        try
        {
            (response, body) = await running;
        }
        finally
        {
            await service.Database.ExecuteAsync("GRANT INSERT ON sandbox.evidence_blobs TO sandbox_app");
        }
        var answer = body.ToJsonString();
        var (_, recorded) = await runner.GetJsonAsync($"/v1/runs/{body.Str("runId")}");
        var record = recorded.ToJsonString();
        foreach (var text in new[] { answer, record })
        {
            Assert.DoesNotContain("evidence_blobs", text, StringComparison.Ordinal);
            Assert.DoesNotContain("SQLSTATE", text, StringComparison.Ordinal);
            Assert.DoesNotContain("permission denied", text, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task AnOutcomeWhoseAccountOfTheRefusalIsRefusedTooIsKeptInTheJournalNotDropped()
    {
        var tenant = AuditTestClient.NewTenant("ro-both");
        using var runner = service.Runner("alice", tenant);
        var running = runner.RunAsync(new { language = "shell", code = "sleep 3; echo kept" });
        await WaitInsideSandboxAsync(tenant);

        // A check violation (23514: the data refused for good) for every ending event: the outcome and the RunFailed saying why.
        await service.Database.ExecuteAsync("ALTER TABLE sandbox.mt_events ADD CONSTRAINT test_no_endings CHECK (type NOT IN ('run_completed', 'run_failed')) NOT VALID");
        HttpResponseMessage response;
        System.Text.Json.Nodes.JsonNode body;
        try
        {
            (response, body) = await running;
            // It used to be a 503 and nothing kept: the run's true outcome was dropped. Now the original waits in the journal
            // (or, refused there too, is set aside under rejected/ for the operator).
            Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
            Assert.Equal("recording", body.Str("status"));
            Assert.Contains("the outcome is kept on this node for the operator", body.Str("reason"), StringComparison.Ordinal);
            var folder = Path.Combine(service.JournalDirectory, service.NodeId);
            var name = body.Str("runId") + ".json";
            Assert.True(File.Exists(Path.Combine(folder, name)) || File.Exists(Path.Combine(folder, "rejected", name)), "the run's outcome was dropped");
            Assert.Contains("run_completed", await File.ReadAllTextAsync(File.Exists(Path.Combine(folder, name)) ? Path.Combine(folder, name) : Path.Combine(folder, "rejected", name)),
                StringComparison.Ordinal);
        }
        finally
        {
            await service.Database.ExecuteAsync("ALTER TABLE sandbox.mt_events DROP CONSTRAINT test_no_endings");
        }
    }

    [Fact]
    public void WhatACrashLeftInTheJournalIsRemovedAtStartAndAnOutputAnOutcomeNamesStays()
    {
        foreach (var orphan in service.Orphans)
            Assert.False(File.Exists(orphan), $"{Path.GetFileName(orphan)} outlived the node's start");
        // Not committed (no such run): it waits in the journal, or is set aside with its outcome for the operator, never deleted.
        var rejected = Path.Combine(Path.GetDirectoryName(service.Named)!, "rejected", Path.GetFileName(service.Named));
        Assert.True(File.Exists(service.Named) || File.Exists(rejected), "an output a journaled outcome names was deleted");
    }

    // The tenant's run is inside its sandbox (announced, not ended); another test's run may still wait in the journal, not ended either.
    private async Task WaitInsideSandboxAsync(string tenant) =>
        await Eventually.WaitUntilAsync(async () => await service.Database.ScalarAsync<long>("""
            SELECT count(*) FROM sandbox.mt_events s WHERE s.type = 'sandbox_started'
              AND s.stream_id IN (SELECT stream_id FROM sandbox.mt_events WHERE type = 'run_requested' AND data -> 'caller' ->> 'tenant' = $1)
              AND NOT EXISTS (SELECT 1 FROM sandbox.mt_events t WHERE t.stream_id = s.stream_id AND t.type IN ('run_completed', 'run_failed', 'run_abandoned'))
            """, tenant) > 0, () => "no run was inside its sandbox", TimeSpan.FromSeconds(20), pollMs: 20);
}
