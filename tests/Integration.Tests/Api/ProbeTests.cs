using System.Net;

namespace Sandbox.Audited.Tests.Api;

[Collection(ApiCollection.Name)]
public sealed class ProbeTests(ApiFixture service)
{
    [Theory]
    [InlineData("/healthz")]
    [InlineData("/readyz")]
    public async Task ProbesAnswerHeadWithoutABody(string path)
    {
        var response = await service.Client().SendAsync(new HttpRequestMessage(HttpMethod.Head, path));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Empty(await response.Content.ReadAsByteArrayAsync());
    }
}
