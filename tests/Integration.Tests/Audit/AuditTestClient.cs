using System.Text.Json.Nodes;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Audit;

public static class AuditTestClient
{
    public static HttpClient Auditor(this ServiceFixture service, string tenant, string subject = "audrey") =>
        service.Client(service.Token(subject, tenant, Roles.Auditor));

    public static async Task<JsonNode> OkJsonAsync(this HttpClient client, string path)
    {
        var (response, body) = await client.GetJsonAsync(path);
        Assert.True(response.IsSuccessStatusCode, $"{path}: {(int)response.StatusCode} {body.ToJsonString()}");
        return body;
    }

    public static string NewTenant(string prefix) => prefix + "-" + Guid.NewGuid().ToString("N")[..8];
}
