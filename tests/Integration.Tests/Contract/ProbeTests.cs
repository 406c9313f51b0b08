using System.Net;

namespace Sandbox.Audited.Tests.Contract;

/// <summary>The probes over Kestrel (which, unlike the in-memory test server, drops the body of a HEAD answer).</summary>
[Collection(ContractCollection.Name)]
public sealed class ProbeTests(ContractFixture service)
{
    [Theory]
    [InlineData("/healthz")]
    [InlineData("/readyz")]
    public async Task ProbesAnswerHeadWithoutABody(string path)
    {
        using var client = new HttpClient { BaseAddress = new Uri(service.BaseUrl) };
        var response = await client.SendAsync(new HttpRequestMessage(HttpMethod.Head, path));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Empty(await response.Content.ReadAsByteArrayAsync());
    }
}
