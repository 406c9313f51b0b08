using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Contract;

/// <summary>What a client generated from the served document needs to be true: every operation named, downloads typed as bytes,
/// a page's cursor of the type the next request takes, and the answers a client meets declared (503 while the record is away).</summary>
[Collection(ContractCollection.Name)]
public sealed class DeclaredAnswersTests(ContractFixture service)
{
    [Fact]
    public async Task EveryOperationHasAnIdAndEveryDownloadIsTypedAsBytes()
    {
        var document = await DocumentAsync();
        var operations = document["paths"]!.AsObject().SelectMany(p => p.Value!.AsObject().Select(o => (Path: p.Key, Method: o.Key, Operation: o.Value!))).ToList();

        Assert.All(operations, o => Assert.False(string.IsNullOrEmpty((string?)o.Operation["operationId"]), $"{o.Method} {o.Path} has no operationId"));
        foreach (var (path, media) in new[] { ("/v1/runs/{id}/artifacts/{name}", "*/*"), ("/v1/runs/{id}/evidence", "application/x-tar") })
        {
            var ok = document["paths"]![path]!["get"]!["responses"]!["200"]!;
            Assert.Equal("binary", (string?)ok["content"]?[media]?["schema"]?["format"]);
        }
        var download = document["paths"]!["/v1/runs/{id}/artifacts/{name}"]!["get"]!["responses"]!.AsObject();
        Assert.Superset(new HashSet<string> { "200", "401", "404", "410", "503" }, download.Select(r => r.Key).ToHashSet());
    }

    [Fact]
    public async Task TheCursorAQueryTakesIsOfTheTypeThePageGivesIt()
    {
        var document = await DocumentAsync();
        foreach (var (path, page) in new[] { ("/v1/audit/runs", "AuditPageOfAuditRun"), ("/v1/audit/events", "AuditPageOfAuditEvent") })
        {
            var cursor = document["paths"]![path]!["get"]!["parameters"]!.AsArray().Single(p => (string?)p!["name"] == "cursor")!;
            var next = document["components"]!["schemas"]![page]!["properties"]!["nextCursor"]!["type"]!.AsArray().Select(t => (string?)t).Where(t => t != "null");
            Assert.Equal(next.Single(), (string?)cursor["schema"]!["type"]);
        }
    }

    [Fact]
    public async Task EveryOperationThatReadsTheRecordDeclaresTheStoreAwayWithRetryAfter()
    {
        var document = await DocumentAsync();
        // These answer from memory (catalogue, active bundle, configured key, sign-in settings) when PostgreSQL is away.
        var fromMemory = new HashSet<string> { "get /v1/runtimes", "get /v1/policies", "post /v1/policies/reload", "get /v1/audit/checkpoints/key", "get /v1/dev" };
        foreach (var (path, methods) in document["paths"]!.AsObject())
            foreach (var (method, operation) in methods!.AsObject())
            {
                if (fromMemory.Contains($"{method} {path}"))
                    continue;
                var unavailable = operation!["responses"]?["503"];
                Assert.True(unavailable is not null, $"{method} {path} does not declare 503");
                Assert.NotNull(unavailable!["headers"]?["Retry-After"]);
                var types = unavailable["content"]!["application/problem+json"]!["schema"]!["allOf"]!.AsArray()
                    .Select(s => s?["properties"]?["type"]?["enum"]).OfType<JsonArray>().Single().Select(t => (string?)t);
                Assert.Contains("/problems/audit-unavailable", types);
            }
    }

    [Fact]
    public async Task AnArtifactInADirectoryDownloadsByItsNameWithTheSlashEncoded()
    {
        using var client = new HttpClient { BaseAddress = new Uri(service.BaseUrl), Timeout = TimeSpan.FromSeconds(60) };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", service.Token("nia", "tenant-declared", Roles.Runner));
        using var run = await client.PostAsJsonAsync("/v1/runs", new { language = "shell", code = "mkdir -p out/sub && printf nested > out/sub/n.txt" });
        Assert.Equal(HttpStatusCode.OK, run.StatusCode);
        var id = (string)JsonNode.Parse(await run.Content.ReadAsStringAsync())!["runId"]!;

        foreach (var name in new[] { "sub/n.txt", Uri.EscapeDataString("sub/n.txt") })
        {
            using var response = await client.GetAsync($"/v1/runs/{id}/artifacts/{name}");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("nested", await response.Content.ReadAsStringAsync());
        }
    }

    [Fact]
    public async Task ANameHoldingAPercentSignIsNotTakenForOneHoldingASlash()
    {
        using var client = new HttpClient { BaseAddress = new Uri(service.BaseUrl), Timeout = TimeSpan.FromSeconds(60) };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", service.Token("nia", "tenant-declared", Roles.Runner));
        using var run = await client.PostAsJsonAsync("/v1/runs", new
        {
            language = "shell",
            code = "mkdir -p out/a && printf nested > out/a/b.txt && printf literal > 'out/a%2Fb.txt' && printf cent > 'out/100%.txt'",
        });
        Assert.Equal(HttpStatusCode.OK, run.StatusCode);
        var id = (string)JsonNode.Parse(await run.Content.ReadAsStringAsync())!["runId"]!;

        var listed = JsonNode.Parse(await client.GetStringAsync($"/v1/runs/{id}/artifacts"))!.AsArray().ToDictionary(a => (string)a!["name"]!, a => (string)a!["href"]!);
        Assert.Equal(new HashSet<string> { "a/b.txt", "a%2Fb.txt", "100%.txt" }, listed.Keys.ToHashSet());
        var expected = new Dictionary<string, string> { ["a/b.txt"] = "nested", ["a%2Fb.txt"] = "literal", ["100%.txt"] = "cent" };
        foreach (var (name, content) in expected)
        {
            // The listing's href, and the name percent-encoded once as a generated client sends a path parameter.
            foreach (var path in new[] { listed[name], $"/v1/runs/{id}/artifacts/{Uri.EscapeDataString(name)}" })
            {
                using var response = await client.GetAsync(path);
                Assert.True(response.StatusCode == HttpStatusCode.OK, $"{path}: {response.StatusCode}");
                Assert.Equal((path, content), (path, await response.Content.ReadAsStringAsync()));
            }
        }
        using var unencoded = await client.GetAsync($"/v1/runs/{id}/artifacts/a/b.txt");
        Assert.Equal("nested", await unencoded.Content.ReadAsStringAsync());

        // Dot segments as sent on the wire (HttpClient would remove them first): the server removes them before routing.
        var bearer = client.DefaultRequestHeaders.Authorization!.Parameter!;
        Assert.EndsWith("\r\n\r\nnested", await RawHttp.GetAsync(service.BaseUrl, $"/v1/runs/{id}/artifacts/a/./x/../b.txt", bearer));
        Assert.EndsWith("\r\n\r\nliteral", await RawHttp.GetAsync(service.BaseUrl, $"/v1/runs/{id}/artifacts/x/%2E%2E/a%252Fb.txt", bearer));

        var parameter = (await DocumentAsync())["paths"]!["/v1/runs/{id}/artifacts/{name}"]!["get"]!["parameters"]!.AsArray().Single(p => (string?)p!["name"] == "name")!;
        Assert.Contains("`%` as `%25`", (string?)parameter["description"]);
    }

    [Fact]
    public async Task VerifyingARunNobodyCanSeeIsTheDeclaredNotFound()
    {
        using var client = new HttpClient { BaseAddress = new Uri(service.BaseUrl) };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", service.Token("ada", "tenant-declared", Roles.Auditor));
        using var response = await client.GetAsync($"/v1/audit/verify?runId={Guid.NewGuid()}");

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        var document = await DocumentAsync();
        Assert.NotNull(document["paths"]!["/v1/audit/verify"]!["get"]!["responses"]!["404"]);
    }

    private async Task<JsonNode> DocumentAsync()
    {
        using var client = new HttpClient { BaseAddress = new Uri(service.BaseUrl) };
        return JsonNode.Parse(await client.GetStringAsync("/openapi/v1.json"))!;
    }
}
