using System.Diagnostics;
using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;
using Sandbox.Audited.Api.Runs;
using Sandbox.Audited.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Sandbox.Audited.Tests.Api;

/// <summary>The per-subject bucket (burst 6, one token a minute in ApiFixture): keys that cannot collide, refusals never 500.</summary>
[Collection(ApiCollection.Name)]
public sealed class RateLimitTests(ApiFixture service, ITestOutputHelper output)
{
    [Fact]
    public async Task TenantAndSubjectSplitDifferentlyDoNotShareABucket()
    {
        // Joined with '/', tenant "rl-a/b" + subject "c" and tenant "rl-a" + subject "b/c" were one key.
        var first = service.Client(service.Token("c", "rl-a/b", "runner"));
        await ExhaustAsync(first);

        var other = service.Client(service.Token("b/c", "rl-a", "runner"));
        var (response, _) = await other.RunAsync(new { language = "shell", code = "true" });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public async Task ARefusalThatCannotBeRecordedIsA503WithRetryAfter()
    {
        const string tenant = "rl-unrecorded";
        var client = service.Client(service.Token("uma", tenant, "runner"));
        await ExhaustAsync(client);

        // The audit store refuses to record this tenant's refusals (as when PostgreSQL is down for them).
        await service.Database.ExecuteAsync($"""
            CREATE FUNCTION sandbox.refuse_rl() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'audit store down (test)'; END $$;
            CREATE TRIGGER refuse_rl BEFORE INSERT ON sandbox.mt_events FOR EACH ROW
              WHEN (NEW.type = 'request_rejected' AND NEW.data -> 'caller' ->> 'tenant' = '{tenant}') EXECUTE FUNCTION sandbox.refuse_rl();
            """);
        try
        {
            var (response, body) = await client.RunAsync(new { language = "shell", code = "true" });

            Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
            Assert.Equal("/problems/audit-unavailable", body.Str("type"));
            Assert.True(response.Headers.RetryAfter?.Delta >= TimeSpan.FromSeconds(1), "503 without Retry-After");
        }
        finally
        {
            await service.Database.ExecuteAsync("DROP TRIGGER refuse_rl ON sandbox.mt_events; DROP FUNCTION sandbox.refuse_rl();");
        }

        // Once the store records again, the refusal is recorded as a 429 like any other.
        var (again, recorded) = await client.RunAsync(new { language = "shell", code = "true" });
        Assert.Equal((HttpStatusCode)429, again.StatusCode);
        Assert.Equal(429L, await service.Database.ScalarAsync<long>(
            "SELECT (data ->> 'httpStatus')::bigint FROM sandbox.mt_events WHERE stream_id = $1::uuid AND type = 'request_rejected'", recorded.Str("runId")));
    }

    [Fact]
    public async Task RequestsTheServiceRefusesDoNotUseUpTheCallersTokens()
    {
        const string tenant = "rl-refunded";
        var client = service.Client(service.Token("rex", tenant, "runner"));

        // The audit store cannot record this tenant's runs: each request is refused with a 503 and nothing runs.
        await service.Database.ExecuteAsync($"""
            CREATE FUNCTION sandbox.refuse_runs() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'audit store down (test)'; END $$;
            CREATE TRIGGER refuse_runs BEFORE INSERT ON sandbox.mt_events FOR EACH ROW
              WHEN (NEW.type = 'run_requested' AND NEW.data -> 'caller' ->> 'tenant' = '{tenant}') EXECUTE FUNCTION sandbox.refuse_runs();
            """);
        try
        {
            for (var i = 0; i < ApiFixture.Burst + 2; i++)
                Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.RunAsync(new { language = "shell", code = "true" })).Response.StatusCode);
        }
        finally
        {
            await service.Database.ExecuteAsync("DROP TRIGGER refuse_runs ON sandbox.mt_events; DROP FUNCTION sandbox.refuse_runs();");
        }

        // The whole burst is still there.
        await ExhaustAsync(client);
    }

    [Fact]
    public async Task WhenTheSharedBucketCannotBeReadTheRequestIsA503WithRetryAfterAndNothingRuns()
    {
        const string tenant = "rl-store-down";
        var client = service.Client(service.Token("stan", tenant, "runner"));
        var before = await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events WHERE data -> 'caller' ->> 'tenant' = $1", tenant);

        // The service's role loses the bucket table, as when PostgreSQL refuses it or is away.
        await service.Database.ExecuteAsync("REVOKE ALL ON sandbox.rate_limit_buckets FROM sandbox_app");
        try
        {
            var (response, body) = await client.RunAsync(new { language = "shell", code = "true" });

            Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
            Assert.Equal("/problems/audit-unavailable", body.Str("type"));
            Assert.Contains("rate limit", body.Str("detail"));
            Assert.True(response.Headers.RetryAfter?.Delta >= TimeSpan.FromSeconds(RunRateLimits.UnrecordedRetryAfterSeconds), "503 without Retry-After");
        }
        finally
        {
            await service.Database.ExecuteAsync("GRANT SELECT, INSERT, UPDATE, DELETE ON sandbox.rate_limit_buckets TO sandbox_app");
        }
        Assert.Equal(before, await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events WHERE data -> 'caller' ->> 'tenant' = $1", tenant));
        Assert.Equal(HttpStatusCode.OK, (await client.RunAsync(new { language = "shell", code = "true" })).Response.StatusCode);
    }

    [Fact]
    public async Task ARefusedRequestTakesNoToken()
    {
        // One token a second, bucket of one: refusals that took tokens would leave the bucket in debt after a second.
        await using var db = NpgsqlDataSource.Create(service.Database.AppConnection);
        var buckets = new SubjectBuckets(db, new RateLimitOptions { BurstLimit = 1, TokensPerPeriod = 1, PeriodSeconds = 1 }, NullLogger<SubjectBuckets>.Instance);
        var key = "refused-" + Guid.NewGuid().ToString("N");

        Assert.True((await buckets.TakeAsync(key, CancellationToken.None)).Granted);
        for (var i = 0; i < 5; i++)
        {
            var (granted, retryAfter) = await buckets.TakeAsync(key, CancellationToken.None);
            Assert.False(granted);
            Assert.Equal(TimeSpan.FromSeconds(1), retryAfter);
        }
        await Task.Delay(1100);

        Assert.True((await buckets.TakeAsync(key, CancellationToken.None)).Granted);
    }

    [Fact]
    public async Task TakingFromTheSharedBucketCostsOneRoundTrip()
    {
        var buckets = service.Services.GetRequiredService<SubjectBuckets>();
        var db = service.Services.GetRequiredService<NpgsqlDataSource>();
        const int n = 500;
        var take = new double[n];
        var ping = new double[n];
        for (var i = 0; i < n; i++)
        {
            var watch = Stopwatch.StartNew();
            await buckets.TakeAsync("latency-" + (i % 20), CancellationToken.None);
            take[i] = watch.Elapsed.TotalMilliseconds;
            watch.Restart();
            await using var command = db.CreateCommand("SELECT 1");
            await command.ExecuteScalarAsync();
            ping[i] = watch.Elapsed.TotalMilliseconds;
        }
        Array.Sort(take);
        Array.Sort(ping);
        output.WriteLine($"take: p50 {take[n / 2]:F3} ms, p95 {take[n * 95 / 100]:F3} ms, p99 {take[n * 99 / 100]:F3} ms; SELECT 1: p50 {ping[n / 2]:F3} ms, p95 {ping[n * 95 / 100]:F3} ms");

        // A generous bound on a shared 2-core machine: the statement is one indexed upsert, not a scan.
        Assert.True(take[n / 2] < 20, $"p50 {take[n / 2]:F3} ms");
    }

    private static async Task ExhaustAsync(HttpClient client)
    {
        for (var i = 0; i < ApiFixture.Burst; i++)
            Assert.Equal(HttpStatusCode.OK, (await client.RunAsync(new { language = "shell", code = "true" })).Response.StatusCode);
        Assert.Equal((HttpStatusCode)429, (await client.RunAsync(new { language = "shell", code = "true" })).Response.StatusCode);
    }
}
