using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Npgsql;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Executor;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Attack;

/// <summary>
/// An attacker's tests of Idempotency-Key across faults: a request whose run was never recorded (its node was killed, or
/// PostgreSQL went away, between the key's claim and the write-ahead commit) must leave the key free for the client's retry,
/// which is what the key is for, and the retry runs the code once.
/// </summary>
public sealed class IdempotencyAttackTests : IAsyncLifetime
{
    private readonly NodeProcesses _node = new("idem");

    public Task InitializeAsync() => _node.InitializeAsync();

    [Fact]
    public async Task ARetryAfterTheNodeWasKilledBeforeRecordingTheRunRunsItOnceInsteadOfRefusingTheKey()
    {
        var since = DateTimeOffset.UtcNow;
        var first = await StartAsync();
        const string tenant = "tenant-idem-crash";
        var key = "crash-" + Guid.NewGuid().ToString("N");
        var request = new { language = "shell", code = "echo once" };

        // The write-ahead commit inserts the run's queue row: holding that table keeps the request between its key's claim and
        // the commit, the window a crash or an outage can hit.
        await using var blocker = new NpgsqlConnection(_node.Database.AdminConnection);
        await blocker.OpenAsync();
        await using (var begin = new NpgsqlCommand("BEGIN; LOCK TABLE sandbox.run_queue IN ACCESS EXCLUSIVE MODE", blocker))
            await begin.ExecuteNonQueryAsync();
        using var client = first.Client(_node.Setup.Token("kim", tenant, Roles.Runner));
        var pending = PostWithKeyAsync(client, key, request);
        await Eventually.WaitUntilAsync(
            async () => await _node.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.idempotency_keys WHERE key = $1 AND run_id IS NULL", key) == 1,
            () => "The request never claimed its key.", TimeSpan.FromSeconds(30));

        await first.CrashAsync();
        await Assert.ThrowsAnyAsync<HttpRequestException>(async () => await pending);
        await using (var rollback = new NpgsqlCommand("ROLLBACK", blocker))
            await rollback.ExecuteNonQueryAsync();
        Assert.Equal(0, await _node.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events WHERE type = 'run_requested'"));

        // The client never learnt a run id: it sends the same request with the same key, as the key invites it to.
        var second = await StartAsync();
        using var again = second.Client(_node.Setup.Token("kim", tenant, Roles.Runner));
        var (response, body) = await PostWithKeyAsync(again, key, request);

        Assert.True(response.StatusCode == HttpStatusCode.OK, $"The retry got {(int)response.StatusCode}: {body.ToJsonString()}");
        Assert.Equal("once\n", body.Str("stdout.content"));
        Assert.Equal(1, await _node.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events WHERE type = 'run_requested'"));
        // And the key now names that run: a third send replays it.
        var (replayed, replay) = await PostWithKeyAsync(again, key, request);
        Assert.Equal(HttpStatusCode.OK, replayed.StatusCode);
        Assert.Equal("true", replayed.Headers.GetValues("Idempotent-Replayed").Single());
        Assert.Equal(body.Str("runId"), replay.Str("runId"));
        var violations = new List<string>();
        await Eventually.WaitUntilAsync(async () => (violations = await Faults.FaultInvariants.CheckRecordAsync(_node.Database, [_node.NodeId], since, [tenant])).Count == 0,
            () => string.Join("; ", violations), TimeSpan.FromSeconds(30), pollMs: 500);
    }

    [Fact]
    public async Task ALateRequestWhoseClaimWasTakenOverRecordsNothingSoTheKeyNamesOneRun()
    {
        var service = await StartAsync();
        const string tenant = "tenant-idem-late";
        var key = "late-" + Guid.NewGuid().ToString("N");
        var request = new { language = "shell", code = "echo one-run" };
        using var client = service.Client(_node.Setup.Token("lee", tenant, Roles.Runner));

        await using var blocker = new NpgsqlConnection(_node.Database.AdminConnection);
        await blocker.OpenAsync();
        await using (var begin = new NpgsqlCommand("BEGIN; LOCK TABLE sandbox.run_queue IN ACCESS EXCLUSIVE MODE", blocker))
            await begin.ExecuteNonQueryAsync();
        // The first request claims the key and stays stuck before its commit, past the claim's timeout; its client retries.
        var late = PostWithKeyAsync(client, key, request);
        await Eventually.WaitUntilAsync(
            async () => await _node.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.idempotency_keys WHERE key = $1", key) == 1,
            () => "The first request never claimed its key.", TimeSpan.FromSeconds(30));
        var claimed = await _node.Database.ScalarAsync<DateTime>("SELECT created_at FROM sandbox.idempotency_keys WHERE key = $1", key);
        await Task.Delay(TimeSpan.FromSeconds(ClaimTimeoutSeconds + 1));
        var retry = PostWithKeyAsync(client, key, request);
        await Eventually.WaitUntilAsync(
            async () => await _node.Database.ScalarAsync<DateTime>("SELECT created_at FROM sandbox.idempotency_keys WHERE key = $1", key) != claimed,
            () => "The retry never took the key over.", TimeSpan.FromSeconds(30));
        await Task.Delay(500); // the retry on its way to its own write-ahead commit, which waits behind the same lock
        await using (var rollback = new NpgsqlCommand("ROLLBACK", blocker))
            await rollback.ExecuteNonQueryAsync();

        var (lateResponse, lateBody) = await late;
        var (retryResponse, retryBody) = await retry;
        Assert.Equal(HttpStatusCode.ServiceUnavailable, lateResponse.StatusCode);
        Assert.True(retryResponse.StatusCode == HttpStatusCode.OK, $"The retry got {(int)retryResponse.StatusCode}: {retryBody.ToJsonString()}");
        Assert.Equal("one-run\n", retryBody.Str("stdout.content"));
        Assert.Equal(1, await _node.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events WHERE type = 'run_requested'"));
        Assert.Equal(Guid.Parse(retryBody.Str("runId")),
            await _node.Database.ScalarAsync<Guid>("SELECT run_id FROM sandbox.idempotency_keys WHERE key = $1", key));
        Assert.NotNull(lateBody);
    }

    private const int ClaimTimeoutSeconds = 5;

    private static async Task<(HttpResponseMessage Response, JsonNode Body)> PostWithKeyAsync(HttpClient client, string key, object request)
    {
        using var message = new HttpRequestMessage(HttpMethod.Post, "/v1/runs") { Content = JsonContent.Create(request, options: ApiCalls.Json) };
        message.Headers.Add("Idempotency-Key", key);
        var response = await client.SendAsync(message);
        return (response, await ApiCalls.BodyAsync(response));
    }

    private Task<ServiceProcess> StartAsync() => _node.StartAsync(new Dictionary<string, string>
    {
        ["Executor__PoolSizePerLanguage"] = "0",
        ["Idempotency__ClaimTimeoutSeconds"] = ClaimTimeoutSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture),
    });

    public Task DisposeAsync() => _node.DisposeAsync();
}
