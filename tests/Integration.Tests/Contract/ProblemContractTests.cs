using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Tests.Contract;

/// <summary>
/// Answers the framework writes by itself (ids that are not UUIDs, bodies the binder cannot read) and the SBOM downloads,
/// checked against what the served OpenAPI document declares for the operation: the status, the media type and, for a
/// problem, its `type` among the ones the document lists.
/// </summary>
[Collection(ContractCollection.Name)]
public sealed class ProblemContractTests(ContractFixture service)
{
    private const string Tenant = "tenant-problems";

    [Theory]
    [InlineData("GET", "/v1/runs/not-a-uuid", "/v1/runs/{id}", Roles.Runner)]
    [InlineData("GET", "/v1/runs/not-a-uuid/events", "/v1/runs/{id}/events", Roles.Runner)]
    [InlineData("GET", "/v1/runs/not-a-uuid/stream", "/v1/runs/{id}/stream", Roles.Runner)]
    [InlineData("POST", "/v1/runs/not-a-uuid/reproduce", "/v1/runs/{id}/reproduce", Roles.Runner)]
    [InlineData("GET", "/v1/audit/runs/not-a-uuid/replay", "/v1/audit/runs/{id}/replay", Roles.Auditor)]
    public async Task AnIdThatIsNotAUuidIsTheDeclaredNotFoundProblem(string method, string path, string template, string role)
    {
        using var client = Client(role);
        using var response = await client.SendAsync(new HttpRequestMessage(new HttpMethod(method), path));

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        var problem = await AssertDeclaredAsync(response, method, template);
        Assert.Equal("/problems/not-found", (string?)problem!["type"]);
        Assert.False(string.IsNullOrWhiteSpace((string?)problem["detail"]));
    }

    [Theory]
    [InlineData("{\"language\":\"python\",\"surprise\":1}", "application/json", "$.surprise")]
    [InlineData("{\"language\":5}", "application/json", "$.language")]
    [InlineData("{\"language\":", "application/json", "$")]
    [InlineData("", "application/json", "needs a JSON body")]
    public async Task AnEvaluationBodyTheBinderCannotReadIsTheDeclaredInvalidRequestSayingWhere(string body, string mediaType, string saying)
    {
        using var client = Client(Roles.Auditor);
        using var response = await client.PostAsync("/v1/policies/evaluate", new StringContent(body, Encoding.UTF8, mediaType));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await AssertDeclaredAsync(response, "POST", "/v1/policies/evaluate");
        Assert.Equal("/problems/invalid-request", (string?)problem!["type"]);
        Assert.Contains(saying, (string?)problem["detail"], StringComparison.Ordinal);
        Assert.DoesNotContain("Sandbox.Audited", (string?)problem["detail"], StringComparison.Ordinal);
    }

    [Fact]
    public async Task AnEvaluationUnderADigestNothingIsStoredForIsTheDeclaredInvalidRequest()
    {
        using var client = Client(Roles.Auditor);
        using var response = await client.PostAsync("/v1/policies/evaluate",
            new StringContent($"{{\"language\":\"python\",\"digest\":\"{new string('0', 64)}\"}}", Encoding.UTF8, "application/json"));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await AssertDeclaredAsync(response, "POST", "/v1/policies/evaluate");
        Assert.Contains(new string('0', 64), (string?)problem!["detail"], StringComparison.Ordinal);
    }

    [Fact]
    public async Task ADevelopmentTokenBodyOfTheWrongShapeIsTheDeclaredInvalidRequest()
    {
        using var client = new HttpClient { BaseAddress = new Uri(service.BaseUrl) };
        using var response = await client.PostAsync("/v1/dev/token",
            new StringContent("{\"subject\":1,\"tenant\":\"t\",\"roles\":\"runner\"}", Encoding.UTF8, "application/json"));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await AssertDeclaredAsync(response, "POST", "/v1/dev/token");
        Assert.Contains("$.subject", (string?)problem!["detail"], StringComparison.Ordinal);
    }

    [Fact]
    public async Task AMethodAPathDoesNotTakeIsAProblemWithAStableType()
    {
        using var client = Client(Roles.Runner);
        using var response = await client.GetAsync("/v1/runs");

        Assert.Equal(HttpStatusCode.MethodNotAllowed, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        Assert.Equal("/problems/method-not-allowed", (string?)problem["type"]);
    }

    [Fact]
    public async Task TheSbomIsServedAsTheDeclaredMediaTypeAndFoundByItsBareDigestToo()
    {
        using var client = Client(Roles.Runner);
        using var current = await client.GetAsync("/v1/runtimes/python/sbom");
        Assert.Equal(HttpStatusCode.OK, current.StatusCode);
        await AssertDeclaredAsync(current, "GET", "/v1/runtimes/{id}/sbom");
        var document = await current.Content.ReadAsByteArrayAsync();

        var runtimes = JsonNode.Parse(await client.GetStringAsync("/v1/runtimes"))!.AsArray();
        var digest = (string)runtimes.Single(r => (string?)r!["id"] == "python")!["sbomDigest"]!;
        Assert.StartsWith("sha256:", digest, StringComparison.Ordinal);
        foreach (var form in new[] { digest, digest["sha256:".Length..], digest.ToUpperInvariant() })
        {
            using var byDigest = await client.GetAsync($"/v1/runtimes/sboms/{form}");
            Assert.Equal(HttpStatusCode.OK, byDigest.StatusCode);
            await AssertDeclaredAsync(byDigest, "GET", "/v1/runtimes/sboms/{digest}");
            Assert.Equal(document, await byDigest.Content.ReadAsByteArrayAsync());
        }
    }

    private HttpClient Client(string role)
    {
        var client = new HttpClient { BaseAddress = new Uri(service.BaseUrl) };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", service.Token("pat", Tenant, role));
        return client;
    }

    /// <summary>The answer's status and media type are declared for the operation; a problem's type is one the document lists. Returns the parsed problem, if one.</summary>
    private async Task<JsonNode?> AssertDeclaredAsync(HttpResponseMessage response, string method, string template)
    {
        using var client = new HttpClient { BaseAddress = new Uri(service.BaseUrl) };
        var document = JsonNode.Parse(await client.GetStringAsync("/openapi/v1.json"))!;
        var operation = document["paths"]?[template]?[method.ToLowerInvariant()];
        Assert.True(operation is not null, $"{method} {template} is not in the document");
        var status = ((int)response.StatusCode).ToString(System.Globalization.CultureInfo.InvariantCulture);
        var declared = operation!["responses"]?[status];
        Assert.True(declared is not null, $"{method} {template} answered {status}, which the document does not declare");
        var mediaType = response.Content.Headers.ContentType?.MediaType;
        var content = declared!["content"]?.AsObject();
        Assert.True(content is not null && mediaType is not null && content.ContainsKey(mediaType),
            $"{method} {template} answered {status} as '{mediaType}'; declared: {content?.ToJsonString() ?? "no content"}");
        if (mediaType != "application/problem+json")
            return null;
        var problem = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        var types = content![mediaType]!["schema"]!["allOf"]!.AsArray()
            .Select(s => s?["properties"]?["type"]?["enum"]).OfType<JsonArray>().Single().Select(t => (string?)t).ToList();
        Assert.True(types.Contains((string?)problem["type"]), $"{method} {template} answered type '{problem["type"]}'; declared: {string.Join(", ", types)}");
        return problem;
    }
}
