using System.Net;
using System.Text.Json.Nodes;
using Npgsql;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Runs;

[Collection(ServiceCollection.Name)]
public sealed class EventHistoryTests(ServiceFixture service)
{
    private readonly HttpClient _runner = service.Runner("dora", "tenant-history");

    [Fact]
    public async Task EventsComeInOrderAndChainTheirHashes()
    {
        var (_, run) = await _runner.RunAsync(new { language = "python", code = "print(1)" });
        var id = run.Str("runId");

        var events = await WaitForEventsAsync(id, "sandbox_removed");

        Assert.Equal(
            ["run_requested", "policy_evaluated", "run_queued", "sandbox_created", "sandbox_started", "sandbox_exited", "output_recorded", "run_completed", "sandbox_removed"],
            events.Select(e => e!.Str("type")));
        Assert.Equal(Enumerable.Range(1, events.Count).Select(i => i.ToString()), events.Select(e => e!.Str("version")));
        var previous = EventChain.Genesis;
        foreach (var e in events)
        {
            Assert.Equal(previous, e!.Str("prevHash"));
            previous = e!.Str("hash");
        }
        Assert.Single(events, e => e!.Str("type") is "run_completed" or "run_failed" or "run_abandoned");
    }

    [Fact]
    public async Task RequestAndDecisionAreCommittedBeforeTheSandboxIsUsed()
    {
        var (_, run) = await _runner.RunAsync(new { language = "shell", code = "echo wal" });
        var id = Guid.Parse(run.Str("runId"));

        // Rows written by one transaction share xmin: request + decision are one commit, the sandbox facts a later one.
        await using var connection = new NpgsqlConnection(service.Database.AdminConnection);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "SELECT type, xmin::text::bigint, timestamp FROM sandbox.mt_events WHERE stream_id = $1 ORDER BY version", connection);
        command.Parameters.AddWithValue(id);
        var rows = new List<(string Type, long Tx, DateTime At)>();
        await using (var reader = await command.ExecuteReaderAsync())
            while (await reader.ReadAsync())
                rows.Add((reader.GetString(0), reader.GetInt64(1), reader.GetDateTime(2)));

        var requested = rows.Single(r => r.Type == "run_requested");
        var decided = rows.Single(r => r.Type == "policy_evaluated");
        var created = rows.Single(r => r.Type == "sandbox_created");
        Assert.Equal(requested.Tx, decided.Tx);
        Assert.NotEqual(requested.Tx, created.Tx);
        Assert.True(requested.At < created.At);
    }

    [Fact]
    public async Task NothingRunsWhenTheRequestCannotBeRecorded()
    {
        var tenant = "tenant-wal-" + Guid.NewGuid().ToString("N")[..6];
        await service.Database.ExecuteAsync("REVOKE INSERT ON sandbox.mt_events FROM sandbox_app");
        try
        {
            var (response, body) = await service.Runner("erin", tenant).RunAsync(new { language = "shell", code = "echo should-not-run" });

            Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
            Assert.Equal("/problems/audit-unavailable", body.Str("type"));
        }
        finally
        {
            await service.Database.ExecuteAsync("GRANT INSERT ON sandbox.mt_events TO sandbox_app");
        }
        var recorded = await service.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.mt_events WHERE data -> 'caller' ->> 'tenant' = $1", tenant);
        Assert.Equal(0, recorded);
    }

    [Theory]
    [InlineData("UPDATE sandbox.mt_events SET data = '{}' WHERE seq_id = (SELECT min(seq_id) FROM sandbox.mt_events)")]
    [InlineData("DELETE FROM sandbox.mt_events WHERE seq_id = (SELECT min(seq_id) FROM sandbox.mt_events)")]
    [InlineData("TRUNCATE sandbox.mt_events CASCADE")]
    public async Task TheServiceRoleCannotChangeOrRemoveEvents(string sql)
    {
        await _runner.RunAsync(new { language = "shell", code = "echo keep-me" });
        var before = await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events");

        await using var connection = new NpgsqlConnection(service.Database.AppConnection);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        var error = await Assert.ThrowsAsync<PostgresException>(() => command.ExecuteNonQueryAsync());

        Assert.Equal(PostgresErrorCodes.InsufficientPrivilege, error.SqlState);
        Assert.True(await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events") >= before);
    }

    [Fact]
    public async Task EvenASuperuserIsRefusedByTheAppendOnlyTrigger()
    {
        await _runner.RunAsync(new { language = "shell", code = "echo keep-me-too" });

        var error = await Assert.ThrowsAsync<PostgresException>(() =>
            service.Database.ExecuteAsync("UPDATE sandbox.mt_events SET type = 'forged' WHERE seq_id = (SELECT max(seq_id) FROM sandbox.mt_events)"));

        Assert.Contains("append-only", error.MessageText);
    }

    private async Task<List<JsonNode?>> WaitForEventsAsync(string id, string lastType)
    {
        // SandboxRemoved is recorded after the response, off the request path; give it a moment.
        for (var attempt = 0; ; attempt++)
        {
            var (response, body) = await _runner.GetJsonAsync($"/v1/runs/{id}/events");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var events = body.AsArray().ToList();
            if (events.Any(e => e!.Str("type") == lastType) || attempt == 50)
                return events;
            await Task.Delay(100);
        }
    }
}
