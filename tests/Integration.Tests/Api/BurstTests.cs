using Sandbox.Audited.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Sandbox.Audited.Tests.Api;

/// <summary>Capacity 4 (global and per tenant), a queue of 8 with a 2 s maximum wait; the rate limit is out of the way.</summary>
public sealed class BurstFixture : ServiceFixture
{
    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Admission:MaxConcurrentRuns"] = "4",
        ["Admission:MaxConcurrentRunsPerTenant"] = "4",
        ["Admission:MaxQueueDepth"] = "8",
        ["Admission:MaxQueueWaitMs"] = "2000",
        ["RateLimit:BurstLimit"] = "1000",
        ["RateLimit:TokensPerPeriod"] = "1000",
    };
}

[CollectionDefinition(Name)]
public sealed class BurstCollection : ICollectionFixture<BurstFixture>
{
    public const string Name = "burst";
}

[Collection(BurstCollection.Name)]
public sealed class BurstTests(BurstFixture service, ITestOutputHelper output)
{
    private const string Tenant = "tenant-burst";
    private const int Requests = 100;

    [Fact]
    public async Task HundredConcurrentRunsAgainstCapacityFourAreServedOrRefusedAndAllAccountedFor()
    {
        var client = service.Runner("burst", Tenant);
        client.Timeout = TimeSpan.FromSeconds(90);

        var responses = await Task.WhenAll(Enumerable.Range(0, Requests).Select(async i =>
        {
            var (response, body) = await client.RunAsync(new { language = "shell", code = $"sleep 0.2; echo {i}" });
            return (Status: (int)response.StatusCode, RetryAfter: response.Headers.RetryAfter?.Delta, RunId: body.Str("runId"), Type: body.Str("type"), RunStatus: body.Str("status"));
        })).WaitAsync(TimeSpan.FromMinutes(3)); // never hangs

        Assert.All(responses, r => Assert.Contains(r.Status, new[] { 200, 429, 503 }));
        Assert.All(responses.Where(r => r.Status != 200), r => Assert.True(r.RetryAfter >= TimeSpan.FromSeconds(1), $"{r.Status} without Retry-After"));
        Assert.All(responses, r => Assert.True(Guid.TryParse(r.RunId, out _), $"{r.Status} without a run id"));
        var served = responses.Count(r => r.Status == 200);
        output.WriteLine($"200: {served}, 429: {responses.Count(r => r.Status == 429)}, 503: {responses.Count(r => r.Status == 503)}");
        Assert.InRange(served, 4, Requests);
        Assert.Contains(responses, r => r.Status == 429); // 100 at once cannot all fit in 4 slots + 8 queued within 2 s
        Assert.All(responses.Where(r => r.Status == 200), r => Assert.Equal("succeeded", r.RunStatus));

        // Every request is in the record: one stream each, each with exactly one terminal event.
        var streams = await service.Database.ScalarAsync<long>(
            "SELECT count(DISTINCT stream_id) FROM sandbox.mt_events WHERE type IN ('run_requested', 'request_rejected') AND data -> 'caller' ->> 'tenant' = $1", Tenant);
        Assert.Equal(Requests, streams);
        Assert.Equal(0L, await service.Database.ScalarAsync<long>("""
            SELECT count(*) FROM (
              SELECT s.stream_id FROM sandbox.mt_events s
              LEFT JOIN sandbox.mt_events t ON t.stream_id = s.stream_id AND t.type IN ('run_completed', 'run_failed', 'run_abandoned')
              WHERE s.type IN ('run_requested', 'request_rejected') AND s.data -> 'caller' ->> 'tenant' = $1
              GROUP BY s.stream_id HAVING count(t.seq_id) <> 1) wrong
            """, Tenant));
        Assert.Equal((long)served, await CountTerminalAsync("succeeded"));
        Assert.Equal((long)responses.Count(r => r.Status == 429), await CountTerminalAsync("refused"));
        Assert.Equal(0L, await service.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.mt_events WHERE type = 'run_completed' AND data ->> 'status' = 'refused' AND coalesce(data ->> 'reason', '') = '' AND stream_id = ANY($1)",
            responses.Select(r => Guid.Parse(r.RunId)).ToArray()));
        var each = responses.Select(r => r.RunId).ToHashSet();
        Assert.Equal(Requests, each.Count);
    }

    private Task<long> CountTerminalAsync(string status) => service.Database.ScalarAsync<long>(
        "SELECT count(*) FROM sandbox.mt_events WHERE type = 'run_completed' AND data ->> 'status' = $1 AND stream_id IN (SELECT stream_id FROM sandbox.mt_events WHERE type = 'run_requested' AND data -> 'caller' ->> 'tenant' = $2)",
        status, Tenant);
}
