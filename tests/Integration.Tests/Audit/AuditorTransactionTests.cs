using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using Npgsql;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Audit;

/// <summary>
/// The settled horizon of audit reads and checkpoints: only open transactions that may append events hold it back.
/// Any login can take a transaction id, so a read-only auditor's open transaction must not hide new runs or stall
/// checkpoints, while a writer's open transaction (the service's login or any other role that may insert events)
/// still must, or a cursor or a checkpoint could pass a lower sequence that commits later.
/// </summary>
/// <summary>
/// A service and database of their own: one test appends a bare event row by hand (as a writer's open transaction would),
/// which the shared database's projection rebuilds and chain checks must not meet.
/// </summary>
public sealed class AuditorTransactionFixture : ServiceFixture;

[CollectionDefinition(Name)]
public sealed class AuditorTransactionCollection : ICollectionFixture<AuditorTransactionFixture>
{
    public const string Name = "auditor-transactions";
}

[Collection(AuditorTransactionCollection.Name)]
public sealed class AuditorTransactionTests(AuditorTransactionFixture service)
{
    private static List<string> RunIds(JsonNode page) => page["items"]!.AsArray().Select(i => i!.Str("runId")).ToList();

    /// <summary>Opens a transaction on its own connection and gives it a transaction id; returns the backend pid.</summary>
    private static async Task<(NpgsqlTransaction Tx, int Pid)> BeginWithXidAsync(NpgsqlConnection connection)
    {
        var tx = await connection.BeginTransactionAsync();
        await using var xid = new NpgsqlCommand("SELECT pg_current_xact_id()", connection, tx);
        await xid.ExecuteScalarAsync();
        return (tx, connection.ProcessID);
    }

    private Task<bool> HoldsXidAsync(int pid) =>
        service.Database.ScalarAsync<bool>("SELECT backend_xid IS NOT NULL FROM pg_stat_activity WHERE pid = $1", pid);

    private async Task<(HttpResponseMessage Response, JsonNode Body)> CheckpointAsync(string tenant)
    {
        var response = await service.Auditor(tenant).PostAsync("/v1/audit/checkpoints", null);
        return (response, await ApiCalls.BodyAsync(response));
    }

    [Fact]
    public async Task AnOpenAuditorTransactionHoldsBackNeitherNewRunsNorCheckpoints()
    {
        var tenant = AuditTestClient.NewTenant("auditor-xid");
        await using var connection = new NpgsqlConnection(service.Database.AuditorConnection);
        await connection.OpenAsync();
        var (tx, pid) = await BeginWithXidAsync(connection);

        var run = await AuditSeed.RunAsync(service, tenant, "ines");

        Assert.Equal([run.ToString()], RunIds(await service.Auditor(tenant).OkJsonAsync("/v1/audit/runs")));
        var clock = Stopwatch.StartNew();
        var (response, body) = await CheckpointAsync(tenant);
        clock.Stop();
        Assert.True(response.StatusCode == HttpStatusCode.Created, body.ToJsonString());
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"the checkpoint took {clock.Elapsed}");
        // Every event of the tenant so far: the run's 8 and the access log's record of the read above.
        Assert.Equal(9, long.Parse(body.Str("treeSize")));
        Assert.Equal(9, await service.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.audit_event_owner WHERE tenant = $1 AND seq_id <= $2", tenant, long.Parse(body.Str("toSequence"))));
        Assert.True(await HoldsXidAsync(pid), "the auditor's transaction was open with an id throughout");
        await tx.RollbackAsync();
    }

    [Fact]
    public async Task ARunExecutedWhileAnAuditorTransactionIsOpenIsListedAndItsEvidenceServedPromptly()
    {
        var tenant = AuditTestClient.NewTenant("auditor-xid-run");
        await using var connection = new NpgsqlConnection(service.Database.AuditorConnection);
        await connection.OpenAsync();
        var (tx, pid) = await BeginWithXidAsync(connection);

        var (response, run) = await service.Runner("ivo", tenant).RunAsync(new { language = "python", code = "print('seen')" });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var id = run.Str("runId");
        Assert.Equal([id], RunIds(await service.Auditor(tenant).OkJsonAsync("/v1/audit/runs")));
        var clock = Stopwatch.StartNew();
        var evidence = await service.Auditor(tenant).GetAsync($"/v1/runs/{id}/evidence"); // takes a fresh checkpoint
        clock.Stop();
        Assert.Equal(HttpStatusCode.OK, evidence.StatusCode);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"the evidence bundle took {clock.Elapsed}");
        Assert.True(await HoldsXidAsync(pid), "the auditor's transaction was open with an id throughout");
        await tx.RollbackAsync();
    }

    [Fact]
    public async Task AWriterOpenLongerThanACheckpointWaitsIsA503ThatSaysWhenToRetry()
    {
        var tenant = AuditTestClient.NewTenant("held-long");
        await using var connection = new NpgsqlConnection(service.Database.AppConnection);
        await connection.OpenAsync();
        var (tx, _) = await BeginWithXidAsync(connection);

        var (response, body) = await CheckpointAsync(tenant); // waits 30 s for the writer, then gives up
        await tx.RollbackAsync();

        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal("/problems/audit-unavailable", body.Str("type"));
        Assert.True(response.Headers.RetryAfter?.Delta is { TotalSeconds: >= 1 }, $"Retry-After: {response.Headers.RetryAfter}");
    }

    [Theory]
    [InlineData("service")]
    [InlineData("superuser")] // another role that may insert events, as the eraser's login does
    public async Task AnOpenWriterTransactionThatAppendedAnEventHoldsBackReadsAndCheckpointsUntilItCommits(string writer)
    {
        var held = AuditTestClient.NewTenant("held");
        var tenant = AuditTestClient.NewTenant("behind");
        var stream = Guid.CreateVersion7();
        await using var connection = new NpgsqlConnection(writer == "service" ? service.Database.AppConnection : service.Database.AdminConnection);
        await connection.OpenAsync();
        var (tx, pid) = await BeginWithXidAsync(connection);
        await using (var append = new NpgsqlCommand("""
            INSERT INTO sandbox.mt_streams (id, type, version) VALUES (@stream, null, 1);
            INSERT INTO sandbox.mt_events (seq_id, id, stream_id, version, data, type, timestamp, user_name)
            VALUES (nextval('sandbox.mt_events_sequence'), gen_random_uuid(), @stream, 1,
                    jsonb_build_object('caller', jsonb_build_object('subject', 'hal', 'tenant', @tenant::text)), 'run_requested', now(), 'hal')
            """, connection, tx))
        {
            append.Parameters.AddWithValue("stream", stream);
            append.Parameters.AddWithValue("tenant", held);
            await append.ExecuteNonQueryAsync();
        }

        // Committed after the writer's event took its (lower) sequence: not listed while that event may still commit.
        var run = await AuditSeed.RunAsync(service, tenant, "hana");
        Assert.Empty(RunIds(await service.Auditor(tenant).OkJsonAsync("/v1/audit/runs")));
        var checkpoint = CheckpointAsync(held);
        await Task.Delay(TimeSpan.FromSeconds(1.5));
        Assert.False(checkpoint.IsCompleted, "the checkpoint did not wait for the open writer");
        Assert.True(await HoldsXidAsync(pid));

        await tx.CommitAsync();
        var (response, body) = await checkpoint.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.True(response.StatusCode == HttpStatusCode.Created, body.ToJsonString());
        Assert.Equal("1", body.Str("treeSize")); // the late commit below the checkpoint's sequence is in it
        Assert.Equal([run.ToString()], RunIds(await service.Auditor(tenant).OkJsonAsync("/v1/audit/runs")));
        Assert.Equal([stream.ToString()], RunIds(await service.Auditor(held).OkJsonAsync("/v1/audit/runs")));
    }
}
