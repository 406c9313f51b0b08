using System.Net;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Configuration;
using Npgsql;
using Sandbox.Audited.Api.Hosting;
using Sandbox.Audited.Tests.Audit;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Evidence;

/// <summary>
/// Output spills to disk beyond 4 KiB (so that outputs take the streamed store path); its own database, so that a test may
/// take the service role's INSERT on the chunk table away for a moment (the evidence store failing while a run is in flight).
/// </summary>
public sealed class ErasureAttackFixture : ServiceFixture
{
    public string JournalDirectory { get; } = Path.Combine(Path.GetTempPath(), "sbx-test-journal-" + Guid.NewGuid().ToString("N")[..8]);

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Executor:MaxBufferedOutputBytes"] = "4096",
        ["Executor:JournalDirectory"] = JournalDirectory,
        ["RateLimit:BurstLimit"] = "1000",
        ["RateLimit:TokensPerPeriod"] = "1000",
    };
}

[CollectionDefinition(Name)]
public sealed class ErasureAttackCollection : ICollectionFixture<ErasureAttackFixture>
{
    public const string Name = "erasure-attack";
}

/// <summary>What an erasure promises (issue 13): the content leaves every answer and the record; nothing untrue is said.</summary>
[Collection(ErasureAttackCollection.Name)]
public sealed class ErasureAttackTests(ErasureAttackFixture service)
{
    private const string Empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    private static string Sha(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));

    private async Task EraseAsync(string tenant, string digest)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["ConnectionStrings:Eraser"] = new NpgsqlConnectionStringBuilder(service.Database.AdminConnection) { Options = "-c role=sandbox_eraser" }.ConnectionString,
        }).Build();
        Assert.Equal(0, await Commands.RunAsync(["erase", "--tenant", tenant, "--digest", digest, "--reason", "data-subject request", "--by", "dpo"], configuration));
    }

    // PostgreSQL goes away for the service (an outage, not a refusal) from the moment the tenant's run has started until the
    // returned handle is disposed.
    private async Task<IAsyncDisposable> StoreAwayOnceRunningAsync(string tenant, int runs = 1)
    {
        await SandboxesStartedAsync(tenant, runs);
        return await service.StoreAwayAsync();
    }

    private async Task SandboxesStartedAsync(string tenant, int runs) =>
        await Eventually.WaitUntilAsync(async () => await service.Database.ScalarAsync<long>(
                "SELECT count(*) FROM sandbox.mt_events WHERE type = 'sandbox_started' AND stream_id IN "
                + "(SELECT stream_id FROM sandbox.mt_events WHERE type = 'run_requested' AND data -> 'caller' ->> 'tenant' = $1)", tenant) >= runs,
            () => "the run never started: " + service.Database.ScalarAsync<string>(
                "SELECT string_agg(type, ',' ORDER BY seq_id) FROM sandbox.mt_events WHERE stream_id IN "
                + "(SELECT stream_id FROM sandbox.mt_events WHERE type = 'run_requested' AND data -> 'caller' ->> 'tenant' = $1)", tenant).GetAwaiter().GetResult(),
            TimeSpan.FromSeconds(30));

    // The store refuses the service's content inserts (a permission taken away: not an outage, no wait would help) until disposed.
    private async Task<IAsyncDisposable> StoreRefusesContentOnceRunningAsync(string tenant, int runs)
    {
        await SandboxesStartedAsync(tenant, runs);
        await service.Database.ExecuteAsync("REVOKE INSERT ON sandbox.evidence_chunks FROM sandbox_app");
        return new Restore(service.Database);
    }

    private sealed class Restore(TestDatabase database) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync() => await database.ExecuteAsync("GRANT INSERT ON sandbox.evidence_chunks TO sandbox_app");
    }

    [Fact]
    public async Task TheRunThatPrintsContentErasedBeforeGetsItsOutputOverOneKibInItsOwnAnswer()
    {
        var tenant = AuditTestClient.NewTenant("er-again");
        // 1.5 KiB of output, over the 1 KiB answered from memory; the literal is not in the code (the code is stored apart).
        var request = new { language = "python", code = "print(('data-subject-' + str(6 * 7)) * 100, end='')" };
        var printed = string.Concat(Enumerable.Repeat("data-subject-42", 100));
        var (_, first) = await service.Runner("alice", tenant).RunAsync(request);
        Assert.Equal(Sha(printed), first.Str("stdout.sha256"));
        await EraseAsync(tenant, Sha(printed));

        // The erased content stays out of the store, but the request that ran the program answers what it printed, as it does
        // for output up to 1 KiB (EvidenceStoreTests.ErasedContentVerifiesAsErasedAndTheChainStillVerifies).
        var (response, again) = await service.Runner("alice", tenant).RunAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("succeeded", again.Str("status"));
        Assert.Equal("utf8", again.Str("stdout.encoding"));
        Assert.Equal(printed, again.Str("stdout.content"));
    }

    [Fact]
    public async Task ASmallOutputIsAnsweredFromMemoryEvenWhenTheOtherStreamSpilled()
    {
        var tenant = AuditTestClient.NewTenant("er-spilled");
        // stderr: 1.1 KiB, kept in memory; stdout: 20 KB, beyond this node's 4 KiB, spilled to disk and streamed into the store.
        var request = new { language = "python", code = "import sys\nsys.stderr.write(('subject-' + str(6 * 7)) * 100)\nsys.stderr.flush()\nprint('z' * 20000)" };
        var written = string.Concat(Enumerable.Repeat("subject-42", 100));
        var (_, first) = await service.Runner("alice", tenant).RunAsync(request);
        Assert.Equal(Sha(written), first.Str("stderr.sha256"));
        await EraseAsync(tenant, Sha(written));

        // Read from the store, the small stream would answer "erased": the request that ran it answers it from memory.
        var (response, again) = await service.Runner("alice", tenant).RunAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("utf8", again.Str("stderr.encoding"));
        Assert.Equal(written, again.Str("stderr.content"));
        Assert.Equal(new string('z', 20000) + "\n", again.Str("stdout.content"));
    }

    [Fact]
    public async Task ErasingTheEmptyContentLeavesLaterRunsEmptyStreamsEmptyAndTheirRunsReproducible()
    {
        var tenant = AuditTestClient.NewTenant("er-empty");
        // Retention erases the empty content of a tenant whose runs all expired: every run has an empty stream or stdin.
        await service.Runner("alice", tenant).RunAsync(new { language = "python", code = "print(1)" });
        await EraseAsync(tenant, Empty);

        var (_, later) = await service.Runner("alice", tenant).RunAsync(new { language = "python", code = "print(2)" });
        var (_, read) = await service.Runner("alice", tenant).GetJsonAsync($"/v1/runs/{later.Str("runId")}");
        // An empty stream has no byte to erase: saying "erased" about a run recorded after the erasure is not true.
        Assert.Equal("utf8", read.Str("stderr.encoding"));
        Assert.Equal("", read.Str("stderr.content"));
        using var reproduce = await service.Runner("alice", tenant).PostAsync($"/v1/runs/{later.Str("runId")}/reproduce", null);
        Assert.Equal(HttpStatusCode.OK, reproduce.StatusCode);
    }

    [Fact]
    public async Task AnOutputTheStoreCouldNotTakeCanStillBeErasedFromTheRecord()
    {
        var tenant = AuditTestClient.NewTenant("er-inline");
        // 20 KB: beyond the 4 KiB this node buffers, so it is spilled and streamed into the store after the run.
        var printed = string.Concat(Enumerable.Repeat("personal-record-42;", 1000));
        var posting = service.Runner("alice", tenant).RunAsync(new
        {
            language = "python", code = "import time\ntime.sleep(3)\nprint(('personal-record-' + str(6 * 7) + ';') * 1000, end='')",
        });
        HttpResponseMessage response;
        System.Text.Json.Nodes.JsonNode run;
        var folder = Path.Combine(service.JournalDirectory, service.NodeId);
        string kept;
        await using (await StoreAwayOnceRunningAsync(tenant))
        {
            (response, run) = await posting;
            // Copied from its capture to a file of its own beside the outcome, not held in memory nor put in the outcome's
            // file: however many outputs an outage catches, none is held whole.
            kept = Path.Combine(folder, $"{run.Str("runId")}.{Sha(printed)}.content");
            Assert.Equal(printed, await File.ReadAllTextAsync(kept));
            Assert.DoesNotContain("\"contents\"", await File.ReadAllTextAsync(Path.Combine(folder, run.Str("runId") + ".json")), StringComparison.Ordinal);
        }
        // The output is not put inside its event: the outcome waits in the node's journal with it (202 "recording", the
        // output answered from memory), and the journal stores it before it commits the events that name it.
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Equal("recording", run.Str("status"));
        Assert.Contains("the evidence store (PostgreSQL) could not take its output when it was to be stored", run.Str("reason"), StringComparison.Ordinal);
        Assert.Equal(printed, run.Str("stdout.content"));
        var id = run.Str("runId");
        Assert.Equal(Sha(printed), run.Str("stdout.sha256"));
        await Eventually.WaitUntilAsync(async () => (await service.Runner("alice", tenant).GetJsonAsync($"/v1/runs/{id}")).Body.Str("status") == "succeeded",
            () => "the journaled outcome was never committed", TimeSpan.FromSeconds(30));
        var (_, committed) = await service.Runner("alice", tenant).GetJsonAsync($"/v1/runs/{id}");
        Assert.Equal(printed, committed.Str("stdout.content"));
        Assert.False(File.Exists(kept), "the kept output outlived its commit");

        await EraseAsync(tenant, Sha(printed));

        foreach (var path in new[] { $"/v1/runs/{id}", $"/v1/runs/{id}/events", $"/v1/runs/{id}/evidence" })
        {
            using var read = await service.Runner("alice", tenant).GetAsync(path);
            Assert.Equal(HttpStatusCode.OK, read.StatusCode);
            Assert.DoesNotContain("personal-record-42;personal-record-42;", await read.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task AnErasureWhileTheOutcomeWaitsInTheJournalKeepsTheContentOutOnceItIsCommitted()
    {
        var tenant = AuditTestClient.NewTenant("er-journal");
        var printed = "personal-record-42\n";
        var posting = service.Runner("alice", tenant).RunAsync(new { language = "python", code = "import time\ntime.sleep(3)\nprint('personal-record-' + str(6 * 7))" });
        HttpResponseMessage response;
        System.Text.Json.Nodes.JsonNode run;
        await using (await StoreAwayOnceRunningAsync(tenant))
        {
            (response, run) = await posting;
            Assert.Equal(HttpStatusCode.Accepted, response.StatusCode); // the outcome waits in the node's journal
            Assert.Contains("not committed yet: the audit store (PostgreSQL) is unavailable", run.Str("reason"), StringComparison.Ordinal);
            await EraseAsync(tenant, Sha(printed)); // a data-subject request handled meanwhile
        }
        var id = run.Str("runId");
        await Eventually.WaitUntilAsync(async () => (await service.Runner("alice", tenant).GetJsonAsync($"/v1/runs/{id}")).Body.Str("status") == "succeeded",
            () => "the journaled outcome was never committed", TimeSpan.FromSeconds(30));

        var (_, read) = await service.Runner("alice", tenant).GetJsonAsync($"/v1/runs/{id}");
        Assert.Equal(Sha(printed), read.Str("stdout.sha256"));
        Assert.Equal("erased", read.Str("stdout.encoding"));
        Assert.Equal("", read.Str("stdout.content"));
    }

    [Fact]
    public async Task AStoreThatRefusesWritesForAWhileWithoutAnOutageKeepsBothOutcomesInTheJournalUntilItTakesThem()
    {
        var tenant = AuditTestClient.NewTenant("er-revoked");
        var runner = service.Runner("alice", tenant);
        var large = "x" + new string('y', 19999) + "\n";
        // Beyond this node's 4 KiB: spilled, streamed into the store on its own after the run.
        var spilled = runner.RunAsync(new { language = "python", code = "import time\ntime.sleep(2)\nprint('x' + 'y' * 19999)" });
        // Within one chunk and in memory: stored by the outcome's own commit (once the other run has given its buffer back).
        var small = runner.RunAsync(new { language = "python", code = "import time\ntime.sleep(4)\nprint('small')" });
        (HttpResponseMessage Response, System.Text.Json.Nodes.JsonNode Body) streamed, committed;
        await using (await StoreRefusesContentOnceRunningAsync(tenant, runs: 2))
        {
            (streamed, committed) = (await spilled, await small);
            // A permission taken away (42501) is not a refusal of the data: like a read-only store during a failover (25006)
            // or a statement timeout (57014), it may pass, and the journal worker would not set it aside. So it is kept in the
            // journal like an outage (it used to end the run failed, losing its true outcome), and committed once it passes.
            foreach (var (response, run) in new[] { streamed, committed })
            {
                Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
                Assert.Equal("recording", run.Str("status"));
                Assert.DoesNotContain("SQLSTATE", run.Str("reason"), StringComparison.Ordinal);
                Assert.DoesNotContain("permission denied", run.Str("reason"), StringComparison.Ordinal);
                Assert.True(File.Exists(Path.Combine(service.JournalDirectory, service.NodeId, run.Str("runId") + ".json")), "the outcome is not in the journal");
            }
            Assert.Contains("the evidence store (PostgreSQL) could not take its output", streamed.Body.Str("reason"), StringComparison.Ordinal);
            Assert.Contains("does not take writes right now", committed.Body.Str("reason"), StringComparison.Ordinal);
        }
        foreach (var (run, stdout) in new[] { (streamed.Body, large), (committed.Body, "small\n") })
        {
            var id = run.Str("runId");
            await Eventually.WaitUntilAsync(async () => (await runner.GetJsonAsync($"/v1/runs/{id}")).Body.Str("status") == "succeeded",
                () => "the journaled outcome was never committed once the store took writes again", TimeSpan.FromSeconds(30));
            Assert.Equal(stdout, (await runner.GetJsonAsync($"/v1/runs/{id}")).Body.Str("stdout.content"));
        }
    }

    [Fact]
    public async Task AStoreThatRefusesTheOutputsDataEndsTheRunFailedSayingOnlyTheSqlStateInsteadOfJournalingIt()
    {
        var tenant = AuditTestClient.NewTenant("er-refused");
        var runner = service.Runner("alice", tenant);
        var spilled = runner.RunAsync(new { language = "python", code = "import time\ntime.sleep(2)\nprint('z' * 20000)" });
        var small = runner.RunAsync(new { language = "python", code = "import time\ntime.sleep(4)\nprint('small')" });
        (HttpResponseMessage Response, System.Text.Json.Nodes.JsonNode Body) large, committed;
        await SandboxesStartedAsync(tenant, runs: 2);
        // A check violation (23514) refuses the data itself: the journal worker would set it aside for good, so waiting there
        // would not help. NOT VALID: the rows already there stay; only new content is refused.
        await service.Database.ExecuteAsync("ALTER TABLE sandbox.evidence_chunks ADD CONSTRAINT test_refuses_all CHECK (false) NOT VALID");
        try
        {
            (large, committed) = (await spilled, await small);
        }
        finally
        {
            await service.Database.ExecuteAsync("ALTER TABLE sandbox.evidence_chunks DROP CONSTRAINT test_refuses_all");
        }

        foreach (var (response, run) in new[] { large, committed })
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("error", run.Str("status"));
            Assert.Contains("(SQLSTATE 23514)", run.Str("reason"), StringComparison.Ordinal);
            // Only the code: the store's own text (its table, its constraint) stays in the server's log.
            Assert.DoesNotContain("evidence_chunks", run.Str("reason"), StringComparison.Ordinal);
            Assert.DoesNotContain("test_refuses_all", run.Str("reason"), StringComparison.Ordinal);
            Assert.Equal(1L, await service.Database.ScalarAsync<long>(
                "SELECT count(*) FROM sandbox.mt_events WHERE stream_id = $1 AND type IN ('run_completed', 'run_failed', 'run_abandoned')", Guid.Parse(run.Str("runId"))));
            Assert.False(File.Exists(Path.Combine(service.JournalDirectory, service.NodeId, run.Str("runId") + ".json")), "the outcome went to the journal");
        }
        Assert.Contains("(succeeded, exit code 0), but its output could not be kept: the evidence store refused its stdout (SQLSTATE 23514)", large.Body.Str("reason"), StringComparison.Ordinal);
        Assert.Equal(Sha(new string('z', 20000) + "\n"), large.Body.Str("stdout.sha256"));
        Assert.Contains("The run's outcome could not be recorded: the audit store refused it (SQLSTATE 23514)", committed.Body.Str("reason"), StringComparison.Ordinal);
        Assert.Contains("It had ended succeeded with exit code 0", committed.Body.Str("reason"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task AJournalFileWhoseContentDoesNotFitOneChunkDoesNotHoldBackTheOutcomesAfterIt()
    {
        var folder = Path.Combine(service.JournalDirectory, service.NodeId);
        Directory.CreateDirectory(folder);
        // Sorts before every real run id (version 7, time-ordered), so the worker meets it first on every pass.
        var first = Path.Combine(folder, "00000000-0000-7000-8000-000000000001.json");
        await File.WriteAllTextAsync(first, JournalForgeryTests.Forged(Guid.Parse("00000000-0000-7000-8000-000000000001"),
            AuditTestClient.NewTenant("er-poison"), new string('x', 1024 * 1024 + 1)).ToJsonString());
        try
        {
            var tenant = AuditTestClient.NewTenant("er-after-poison");
            var posting = service.Runner("alice", tenant).RunAsync(new { language = "python", code = "import time\ntime.sleep(3)\nprint('after')" });
            HttpResponseMessage response;
            System.Text.Json.Nodes.JsonNode run;
            await using (await StoreAwayOnceRunningAsync(tenant))
                (response, run) = await posting;
            Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);

            // "A file that fails for its data does not hold back the files after it" (OutcomeJournal).
            await Eventually.WaitUntilAsync(async () => (await service.Runner("alice", tenant).GetJsonAsync($"/v1/runs/{run.Str("runId")}")).Body.Str("status") == "succeeded",
                () => "the journaled outcome after a file with a content over one chunk was never committed", TimeSpan.FromSeconds(30));
        }
        finally
        {
            File.Delete(first);
        }
    }
}
