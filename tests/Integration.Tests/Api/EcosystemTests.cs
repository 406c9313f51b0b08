using System.Net;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Api;

/// <summary>Rate limit, OpenAPI and docs, health, metrics, runtimes and problem details.</summary>
[Collection(ApiCollection.Name)]
public sealed class EcosystemTests(ApiFixture service)
{
    private const string Tenant = "tenant-ecosystem";

    [Fact]
    public async Task SubjectOverItsRateLimitGets429WithRetryAfterAndTheRefusalIsRecorded()
    {
        var client = service.Runner("rory", Tenant);
        for (var i = 0; i < ApiFixture.Burst; i++)
            Assert.Equal(HttpStatusCode.OK, (await client.RunAsync(new { language = "shell", code = "true" })).Response.StatusCode);

        var (response, body) = await client.RunAsync(new { language = "shell", code = "true" });

        Assert.Equal((HttpStatusCode)429, response.StatusCode);
        Assert.Equal("/problems/rate-limited", body.Str("type"));
        Assert.InRange(int.Parse(response.Headers.GetValues("Retry-After").Single()), 1, 60);
        Assert.Equal(429L, await service.Database.ScalarAsync<long>(
            "SELECT (data ->> 'httpStatus')::bigint FROM sandbox.mt_events WHERE stream_id = $1::uuid AND type = 'request_rejected'", body.Str("runId")));
        // Another subject has its own bucket.
        Assert.Equal(HttpStatusCode.OK, (await service.Runner("rosa", Tenant).RunAsync(new { language = "shell", code = "true" })).Response.StatusCode);
    }

    [Fact]
    public async Task OpenApiDocumentDescribesTheRunsApiWithBearerAuth()
    {
        var (response, document) = await service.Client().GetJsonAsync("/openapi/v1.json");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.NotNull(document["paths"]?["/v1/runs"]?["post"]);
        Assert.NotNull(document["paths"]?["/v1/runs/{id}/stream"]);
        Assert.NotNull(document["paths"]?["/v1/runtimes"]);
        Assert.Equal("bearer", document["components"]?["securitySchemes"]?["Bearer"]?["scheme"]?.ToString());
    }

    [Fact]
    public async Task InteractiveDocsAreServed()
    {
        var response = await service.Client().GetAsync("/docs");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/html", response.Content.Headers.ContentType?.MediaType);
        // Scalar resolves the document against the application root: /openapi/v1.json. Its assets ship in the package (offline).
        Assert.Contains("\"url\":\"openapi/v1.json\"", await response.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.OK, (await service.Client().GetAsync("/docs/scalar.js")).StatusCode);
    }

    [Fact]
    public async Task HealthAndReadinessAnswer()
    {
        var client = service.Client();

        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/healthz")).StatusCode);
        var (ready, body) = await client.GetJsonAsync("/readyz");
        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        Assert.Equal("ok", body.Str("checks.postgres"));
        Assert.Equal("ok", body.Str("checks.docker"));
    }

    [Fact]
    public async Task RuntimesListTheCatalogueWithImageIdsAndIsolationClasses()
    {
        var (response, body) = await service.Client(service.Token("rhea", Tenant, "auditor")).GetJsonAsync("/v1/runtimes");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var runtimes = body.AsArray();
        Assert.Equal(["javascript", "python", "python-data", "shell"], runtimes.Select(r => r!.Str("id")));
        Assert.Equal(["javascript", "python", "python", "shell"], runtimes.Select(r => r!.Str("language")));
        Assert.All(runtimes, r => Assert.StartsWith("sha256:", r!.Str("imageId")));
        Assert.All(runtimes, r => Assert.Equal($"sbx-{r!.Str("id")}:current", r!.Str("image")));
        Assert.All(runtimes, r => Assert.Equal(["standard", "strong"], r!["isolation"]!.AsArray().Select(c => c!.Str("name"))));
        Assert.All(runtimes, r => Assert.Equal(["runc", "runsc"], r!["isolation"]!.AsArray().Select(c => c!.Str("ociRuntime"))));
    }

    [Fact]
    public async Task ErrorsAreProblemDetailsWithAStableType()
    {
        var (unauthorized, noToken) = await service.Client().GetJsonAsync("/v1/runtimes");
        var (notFound, missing) = await service.Runner("pia", Tenant).GetJsonAsync($"/v1/runs/{Guid.NewGuid()}");

        Assert.Equal(HttpStatusCode.Unauthorized, unauthorized.StatusCode);
        Assert.Equal("application/problem+json", unauthorized.Content.Headers.ContentType?.MediaType);
        Assert.Equal("/problems/unauthorized", noToken.Str("type"));
        Assert.Equal(HttpStatusCode.NotFound, notFound.StatusCode);
        Assert.Equal("/problems/not-found", missing.Str("type"));
    }
}
