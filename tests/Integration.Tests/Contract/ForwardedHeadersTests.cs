using System.Net;
using System.Net.Http.Json;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Contract;

/// <summary>Behind a reverse proxy (ForwardedHeaders:Enabled, the proxy on loopback): the recorded client is the real one.</summary>
[Collection(ContractCollection.Name)]
public sealed class ForwardedHeadersTests(ContractFixture service)
{
    [Fact]
    public async Task RunRecordsTheClientAddressTheKnownProxyForwarded()
    {
        using var client = new HttpClient { BaseAddress = new Uri(service.BaseUrl) };
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/runs") { Content = JsonContent.Create(new { language = "shell", code = "true" }) };
        request.Headers.Authorization = new("Bearer", service.Token("fern", "tenant-contract", Roles.Runner));
        request.Headers.Add("X-Forwarded-For", "198.51.100.23");

        var response = await client.SendAsync(request);
        var body = await ApiCalls.BodyAsync(response);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("198.51.100.23", await service.Database.ScalarAsync<string>(
            "SELECT data -> 'client' ->> 'address' FROM sandbox.mt_events WHERE stream_id = $1::uuid AND type = 'run_requested'", body.Str("runId")));
    }
}
