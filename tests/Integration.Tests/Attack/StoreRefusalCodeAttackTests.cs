using System.Net;
using Sandbox.Audited.Tests.Audit;
using Sandbox.Audited.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Sandbox.Audited.Tests.Attack;

public sealed class StoreRefusalCodeFixture : ServiceFixture
{
    public string JournalDirectory { get; } = Path.Combine(Path.GetTempPath(), "sbx-test-journal-" + Guid.NewGuid().ToString("N")[..8]);

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Executor:JournalDirectory"] = JournalDirectory,
        ["RateLimit:BurstLimit"] = "1000",
    };
}

[CollectionDefinition(Name)]
public sealed class StoreRefusalCodeCollection : ICollectionFixture<StoreRefusalCodeFixture>
{
    public const string Name = "attack4-store-refusal-codes";
}

/// <summary>
/// Attack on StoreRefusals.IsPermanent, one SQLSTATE at a time: a trigger on sandbox.mt_events refuses one run's
/// run_completed with the chosen code while the run is inside its sandbox. A refusal of the data (class 22, 23 but 23505,
/// 54) must end the run run_failed naming the code; anything else must keep the true outcome in the journal and commit it
/// once the trigger is gone. Either way: exactly one terminal event, every event of the run once, the answer true.
/// </summary>
[Collection(StoreRefusalCodeCollection.Name)]
public sealed class StoreRefusalCodeAttackTests(StoreRefusalCodeFixture service, ITestOutputHelper output)
{
    [Theory]
    [InlineData("22023", true)]  // invalid parameter value
    [InlineData("23514", true)]  // check violation
    [InlineData("54000", true)]  // program limit
    [InlineData("23505", false)] // unique violation: taken for a concurrent append
    [InlineData("40001", false)] // serialization failure
    [InlineData("40P01", false)] // deadlock
    [InlineData("53300", false)] // too many connections
    [InlineData("57014", false)] // statement timeout / cancelled
    [InlineData("P0001", false)] // a RAISE in a function
    [InlineData("XX000", false)] // internal error
    public Task AnOutcomeRefusedWithThisCodeEndsTheRunOnceAndTruly(string sqlState, bool permanent) =>
        RefusedAsync(sqlState, permanent, ["run_completed"]);

    /// <summary>The store refuses the sandbox's exit as well as the ending: the account of the refusal is then recorded alone.</summary>
    [Fact]
    public Task AnOutcomeWhoseExitIsRefusedTooEndsTheRunWithTheAccountAlone() =>
        RefusedAsync("23514", true, ["run_completed", "sandbox_exited"]);

    private async Task RefusedAsync(string sqlState, bool permanent, string[] refusedTypes)
    {
        var factsKept = refusedTypes is ["run_completed"];
        var tenant = AuditTestClient.NewTenant("code-" + sqlState.ToLowerInvariant());
        using var runner = service.Runner("alice", tenant);
        runner.Timeout = TimeSpan.FromMinutes(2);
        var running = runner.RunAsync(new { language = "shell", code = "sleep 3; echo truthful" });
        var runId = await InsideSandboxAsync(tenant);
        var name = "test_refuse_" + sqlState.ToLowerInvariant() + "_" + refusedTypes.Length;
        var types = string.Join(", ", refusedTypes.Select(t => $"'{t}'"));
        await service.Database.ExecuteAsync($"""
            CREATE FUNCTION sandbox.{name}() RETURNS trigger LANGUAGE plpgsql AS $f$
            BEGIN
              IF NEW.stream_id = '{runId}'::uuid AND NEW.type IN ({types}) THEN
                RAISE EXCEPTION 'refused by the test' USING ERRCODE = '{sqlState}';
              END IF;
              RETURN NEW;
            END $f$;
            CREATE TRIGGER {name} BEFORE INSERT ON sandbox.mt_events FOR EACH ROW EXECUTE FUNCTION sandbox.{name}();
            """);
        HttpResponseMessage response;
        System.Text.Json.Nodes.JsonNode body;
        try
        {
            (response, body) = await running;
            output.WriteLine($"{sqlState}: answer {(int)response.StatusCode} {body.ToJsonString()}");
        }
        finally
        {
            await service.Database.ExecuteAsync($"DROP TRIGGER {name} ON sandbox.mt_events; DROP FUNCTION sandbox.{name}();");
        }
        Assert.Equal(runId, Guid.Parse(body.Str("runId")));

        if (permanent)
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("error", body.Str("status")); // run_failed reads as status "error"
        }
        else
        {
            Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
            Assert.Equal("recording", body.Str("status"));
            Assert.Equal("truthful\n", body.Str("stdout.content"));
        }

        // The record ends once: failed naming the code, or the true outcome committed from the journal.
        string terminals = "";
        await Eventually.WaitUntilAsync(async () =>
        {
            terminals = await service.Database.ScalarAsync<string>(
                "SELECT coalesce(string_agg(type, ',' ORDER BY seq_id), '') FROM sandbox.mt_events WHERE stream_id = $1 AND type IN ('run_completed', 'run_failed', 'run_abandoned')", runId) ?? "";
            return terminals.Length > 0 && !File.Exists(Path.Combine(service.JournalDirectory, service.NodeId, $"{runId:D}.json"));
        }, () => $"the run did not end in the record (terminal events '{terminals}')", TimeSpan.FromSeconds(40), pollMs: 250);
        await Task.Delay(1000); // a second terminal event would come now, from the journal or a retry
        terminals = await service.Database.ScalarAsync<string>(
            "SELECT coalesce(string_agg(type, ',' ORDER BY seq_id), '') FROM sandbox.mt_events WHERE stream_id = $1 AND type IN ('run_completed', 'run_failed', 'run_abandoned')", runId) ?? "";
        Assert.Equal(permanent ? "run_failed" : "run_completed", terminals);
        Assert.Equal(0, await service.Database.ScalarAsync<long>(
            "SELECT count(*) - count(DISTINCT version) FROM sandbox.mt_events WHERE stream_id = $1", runId));
        // Kept, or refused for good with only the ending refused: the sandbox's exit and output once, beside run_failed. Refused
        // for good with the exit too: they go with the refused batch ("the events that said so, with its exit and output, are
        // not in the record"); run_failed says what the run had ended with.
        Assert.Equal(!permanent || factsKept ? 1 : 0, await service.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'sandbox_exited'", runId));
        Assert.Equal(!permanent || factsKept ? 1 : 0, await service.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'output_recorded'", runId));
        Assert.Equal(1, await service.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'sandbox_removed'", runId));
        var (_, run) = await runner.GetJsonAsync($"/v1/runs/{runId}");
        output.WriteLine($"{sqlState}: record {run.ToJsonString()}");
        if (permanent)
        {
            Assert.Equal("error", run.Str("status"));
            Assert.Contains($"SQLSTATE {sqlState}", run.Str("reason"), StringComparison.Ordinal);
            Assert.Contains("It had ended succeeded with exit code 0", run.Str("reason"), StringComparison.Ordinal);
            Assert.Contains(factsKept ? "the event that said so is not in the record (its exit and output are)"
                : "the events that said so, with its exit and output, are not in the record", run.Str("reason"), StringComparison.Ordinal);
            if (factsKept)
                Assert.Equal("truthful\n", run.Str("stdout.content"));
        }
        else
        {
            Assert.Equal("succeeded", run.Str("status"));
            Assert.Equal("truthful\n", run.Str("stdout.content"));
        }
        Assert.DoesNotContain("refused by the test", run.ToJsonString(), StringComparison.Ordinal);
        Assert.DoesNotContain("refused by the test", body.ToJsonString(), StringComparison.Ordinal);
    }

    private async Task<Guid> InsideSandboxAsync(string tenant)
    {
        Guid? id = null;
        await Eventually.WaitUntilAsync(async () => (id = await service.Database.ScalarAsync<Guid?>("""
            SELECT s.stream_id FROM sandbox.mt_events s WHERE s.type = 'sandbox_started'
              AND s.stream_id IN (SELECT stream_id FROM sandbox.mt_events WHERE type = 'run_requested' AND data -> 'caller' ->> 'tenant' = $1)
            LIMIT 1
            """, tenant)) is not null, () => "the run never started its sandbox", TimeSpan.FromSeconds(20), pollMs: 20);
        return id!.Value;
    }
}
