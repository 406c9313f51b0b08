using System.Net;
using System.Text.Json.Nodes;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Contract;

/// <summary>A service whose javascript image the engine does not have (no warm pools, so nothing retries in the background).</summary>
public sealed class MissingImageFixture : ServiceFixture
{
    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Executor:Images:javascript"] = "sbx-contract-missing:none",
        ["Executor:PoolSizePerLanguage"] = "0",
    };
}

public sealed class MissingImageTests(MissingImageFixture service) : IClassFixture<MissingImageFixture>
{
    [Fact]
    public async Task ABillOfMaterialsWhoseImageCannotBeInspectedIsA503WithRetryAfter()
    {
        using var client = service.Runner("mia", "tenant-missing-image");
        using var response = await client.GetAsync("/v1/runtimes/javascript/sbom");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("/problems/sandbox-unavailable", (string?)JsonNode.Parse(await response.Content.ReadAsStringAsync())!["type"]);
        Assert.True(response.Headers.RetryAfter?.Delta is { TotalSeconds: >= 1 }, $"Retry-After: {response.Headers.RetryAfter}");
    }
}
