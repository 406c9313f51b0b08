using System.Net;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Api;

/// <summary>A bucket of two that does not refill during the test, and a spool under a regular file: no upload can be spooled.</summary>
public sealed class RefundFixture : ServiceFixture
{
    public const int Burst = 2;

    /// <summary>A regular file where the spool's parent directory should be.</summary>
    public string NotADirectory { get; } = Path.GetTempFileName();

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["RateLimit:BurstLimit"] = Burst.ToString(System.Globalization.CultureInfo.InvariantCulture),
        ["RateLimit:TokensPerPeriod"] = "1",
        ["RateLimit:PeriodSeconds"] = "3600",
        ["Executor:PoolSizePerLanguage"] = "0",
        ["Executor:SpoolDirectory"] = Path.Combine(NotADirectory, "spool"),
    };

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        File.Delete(NotADirectory);
    }
}

/// <summary>Every 5xx the service itself answers to a run request gives the caller's token back, whichever step failed.</summary>
public sealed class RefundTests(RefundFixture service) : IClassFixture<RefundFixture>
{
    [Fact]
    public async Task UploadsTheNodeCannotSpoolDoNotUseUpTheCallersTokens()
    {
        using var client = service.Runner("ria", "tenant-refund-spool");

        for (var i = 0; i < RefundFixture.Burst + 2; i++)
        {
            using var form = new MultipartFormDataContent
            {
                { new StringContent("python"), "language" },
                { new StringContent("print(open('in.txt').read())"), "code" },
                { new StringContent("hello"), "in.txt", "in.txt" },
            };
            using var response = await client.PostAsync("/v1/runs", form);
            Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        }

        await AssertWholeBurstLeftAsync(client);
    }

    [Fact]
    public async Task RefusalsThatCannotBeRecordedDoNotUseUpTheCallersTokens()
    {
        const string tenant = "tenant-refund-unrecorded";
        using var client = service.Runner("rob", tenant);
        // The audit store refuses this tenant's refusals: an invalid request is answered 503, not 400, and nothing is recorded.
        await service.Database.ExecuteAsync($"""
            CREATE FUNCTION sandbox.refuse_refund() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'audit store down (test)'; END $$;
            CREATE TRIGGER refuse_refund BEFORE INSERT ON sandbox.mt_events FOR EACH ROW
              WHEN (NEW.type = 'request_rejected' AND NEW.data -> 'caller' ->> 'tenant' = '{tenant}') EXECUTE FUNCTION sandbox.refuse_refund();
            """);
        try
        {
            for (var i = 0; i < RefundFixture.Burst + 2; i++)
                Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.RunAsync(new { language = "cobol", code = "DISPLAY 1" })).Response.StatusCode);
        }
        finally
        {
            await service.Database.ExecuteAsync("DROP TRIGGER refuse_refund ON sandbox.mt_events; DROP FUNCTION sandbox.refuse_refund();");
        }

        await AssertWholeBurstLeftAsync(client);
    }

    // The whole burst is still there, and then the limit holds: the bucket was really in use.
    private static async Task AssertWholeBurstLeftAsync(HttpClient client)
    {
        for (var i = 0; i < RefundFixture.Burst; i++)
            Assert.Equal(HttpStatusCode.OK, (await client.RunAsync(new { language = "shell", code = "true" })).Response.StatusCode);
        Assert.Equal((HttpStatusCode)429, (await client.RunAsync(new { language = "shell", code = "true" })).Response.StatusCode);
    }
}
