using System.Net;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Api;

/// <summary>The per-subject bucket (burst 6, one token a minute in ApiFixture): keys that cannot collide, refusals never 500.</summary>
[Collection(ApiCollection.Name)]
public sealed class RateLimitTests(ApiFixture service)
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

    private static async Task ExhaustAsync(HttpClient client)
    {
        for (var i = 0; i < ApiFixture.Burst; i++)
            Assert.Equal(HttpStatusCode.OK, (await client.RunAsync(new { language = "shell", code = "true" })).Response.StatusCode);
        Assert.Equal((HttpStatusCode)429, (await client.RunAsync(new { language = "shell", code = "true" })).Response.StatusCode);
    }
}
