using System.Net;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Api;

/// <summary>The per-subject bucket lives in PostgreSQL: two api nodes hand out one budget, not one each.</summary>
public sealed class SharedRateLimitTests
{
    [Fact]
    public async Task TwoNodesShareASubjectsBudget()
    {
        var settings = new Dictionary<string, string?>
        {
            ["RateLimit:BurstLimit"] = "3",
            ["RateLimit:TokensPerPeriod"] = "1",
            ["RateLimit:PeriodSeconds"] = "600",
        };
        var first = await ClusterNode.StartAsync(settings);
        var second = await ClusterNode.StartAsync(settings, first);
        try
        {
            var onFirst = first.Runner("rhea", "tenant-shared-limit");
            var onSecond = second.Runner("rhea", "tenant-shared-limit");
            var statuses = new List<HttpStatusCode>();
            foreach (var client in new[] { onFirst, onSecond, onFirst, onSecond, onFirst })
                statuses.Add((await client.RunAsync(new { language = "shell", code = "true" })).Response.StatusCode);

            Assert.Equal([HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.OK, (HttpStatusCode)429, (HttpStatusCode)429], statuses);
            // Another subject on either node still has its own budget.
            Assert.Equal(HttpStatusCode.OK, (await second.Runner("remy", "tenant-shared-limit").RunAsync(new { language = "shell", code = "true" })).Response.StatusCode);
        }
        finally
        {
            await second.DisposeAsync();
            await first.DisposeAsync();
        }
    }
}
