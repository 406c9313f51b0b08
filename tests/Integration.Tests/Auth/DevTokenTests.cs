using System.Net;
using System.Net.Http.Json;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Auth;

[Collection(Infrastructure.ServiceCollection.Name)]
public sealed class DevTokenTests(ServiceFixture service)
{
    [Fact]
    public async Task DevelopmentTokenStartsARun()
    {
        var anonymous = service.Client();
        var minted = await anonymous.PostAsJsonAsync("/v1/dev/token", new { subject = "dev-erin", tenant = "tenant-devtoken", roles = new[] { "runner" } });
        var body = await ApiCalls.BodyAsync(minted);
        Assert.Equal(HttpStatusCode.OK, minted.StatusCode);

        var (response, run) = await service.Client(body.Str("token")).RunAsync(new { language = "shell", code = "echo minted" });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("dev-erin", run.Str("subject"));
        Assert.Equal("tenant-devtoken", run.Str("tenant"));
        Assert.Equal("minted\n", run.Str("stdout.content"));
    }

    [Theory]
    [InlineData("admin")]
    [InlineData("reviewer")]
    public async Task DevelopmentTokenRefusesRolesBeyondRunnerAndAuditor(string role)
    {
        var response = await service.Client().PostAsJsonAsync("/v1/dev/token", new { subject = "dev-frank", tenant = "tenant-devtoken", roles = new[] { role } });
        var body = await ApiCalls.BodyAsync(response);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("/problems/invalid-request", body.Str("type"));
        Assert.Contains("roles", body.Str("detail"));
    }

    [Fact]
    public async Task DevelopmentTokenRefusesOddNames()
    {
        var response = await service.Client().PostAsJsonAsync("/v1/dev/token", new { subject = "a b", tenant = "", roles = new[] { "runner" } });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
    }

    [Fact]
    public async Task PlaygroundAndAuditPagesAreServedWithAContentSecurityPolicy()
    {
        var client = service.Client();
        var playground = await client.GetAsync("/");
        var audit = await client.GetAsync("/audit/");

        Assert.Equal(HttpStatusCode.OK, playground.StatusCode);
        Assert.Contains("/assets/playground.js", await playground.Content.ReadAsStringAsync());
        Assert.Contains("default-src 'self'", playground.Headers.GetValues("Content-Security-Policy").Single());
        Assert.Equal(HttpStatusCode.OK, audit.StatusCode);
        Assert.Contains("/assets/audit.js", await audit.Content.ReadAsStringAsync());
    }
}

/// <summary>The service in oidc mode, with a development key configured as well: the dev sign-in must still not exist.</summary>
public sealed class OidcModeFixture : ServiceFixture
{
    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Auth:Mode"] = "oidc",
        ["Auth:Authority"] = "http://127.0.0.1:9/",
        ["Auth:AllowHttpAuthority"] = "true",
        ["Executor:PoolSizePerLanguage"] = "0",
    };
}

[CollectionDefinition(Name)]
public sealed class OidcModeCollection : ICollectionFixture<OidcModeFixture>
{
    public const string Name = "oidc-mode";
}

[Collection(OidcModeCollection.Name)]
public sealed class DevTokenInOidcModeTests(OidcModeFixture service)
{
    [Fact]
    public async Task DevelopmentTokenEndpointDoesNotExistInOidcMode()
    {
        var client = service.Client();

        var mint = await client.PostAsJsonAsync("/v1/dev/token", new { subject = "mallory", tenant = "tenant-oidc", roles = new[] { "runner" } });
        var info = await client.GetAsync("/v1/dev");

        Assert.Equal(HttpStatusCode.NotFound, mint.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, info.StatusCode);
        var routes = service.Services.GetRequiredService<EndpointDataSource>().Endpoints.OfType<RouteEndpoint>().Select(e => e.RoutePattern.RawText ?? "");
        Assert.DoesNotContain(routes, r => r.StartsWith("/v1/dev", StringComparison.OrdinalIgnoreCase));
        Assert.Contains(routes, r => r.StartsWith("/v1/runs", StringComparison.OrdinalIgnoreCase));
    }
}
