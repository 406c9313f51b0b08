using System.Net;
using System.Net.Http.Json;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Configuration;
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
    public async Task DevelopmentSignInRefusesAHostThatIsNotLoopbackButTheApiStillAnswersIt()
    {
        // A DNS-rebinding page reaches 127.0.0.1 under its own name, which the browser sends as Host.
        using var mint = new HttpRequestMessage(HttpMethod.Post, "/v1/dev/token")
        {
            Content = JsonContent.Create(new { subject = "rebound", tenant = "tenant-devtoken", roles = new[] { "runner" } }),
        };
        mint.Headers.Host = "rebind.attacker.test";
        using var behindProxy = new HttpRequestMessage(HttpMethod.Get, "/v1/runtimes");
        behindProxy.Headers.Host = "sandbox.example.org";
        behindProxy.Headers.Authorization = new("Bearer", service.Token("proxied", "tenant-devtoken", "runner"));

        var refused = await service.Client().SendAsync(mint);
        var served = await service.Client().SendAsync(behindProxy);

        Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
        Assert.Contains("loopback", (await ApiCalls.BodyAsync(refused)).Str("detail"));
        Assert.Equal(HttpStatusCode.OK, served.StatusCode);
    }

    [Fact]
    public async Task EveryMintedTokenIsRecordedWhereTheTenantsAuditorsCanReadIt()
    {
        var tenant = "tenant-mint-" + Guid.NewGuid().ToString("N")[..8];
        var minted = await service.Client().PostAsJsonAsync("/v1/dev/token", new { subject = "dev-gus", tenant, roles = new[] { "runner", "auditor" } });
        Assert.Equal(HttpStatusCode.OK, minted.StatusCode);
        var expiresAt = (await ApiCalls.BodyAsync(minted)).Str("expiresAt");

        var (_, page) = await service.Client(service.Token("ina", tenant, "auditor")).GetJsonAsync("/v1/audit/events?type=token_minted");

        var recorded = Assert.Single(page["items"]!.AsArray())!;
        Assert.Equal(("dev-gus", tenant, "auditor,runner", "localhost"),
            (recorded.Str("data.caller.subject"), recorded.Str("data.caller.tenant"), string.Join(",", recorded["data"]!["caller"]!["roles"]!.AsArray().Select(r => r!.ToString())), recorded.Str("data.host")));
        Assert.Equal(DateTimeOffset.Parse(expiresAt), DateTimeOffset.Parse(recorded.Str("data.expiresAt")), TimeSpan.FromSeconds(5));
        Assert.Contains("anonymous", recorded.Str("data.requestedBy"));
    }

    [Fact]
    public async Task ATokenWithACritHeaderIsRefused()
    {
        var keys = Sandbox.Audited.Api.Auth.DevelopmentKeys.Load(service.KeyPath);
        var now = DateTime.UtcNow;
        var token = new Microsoft.IdentityModel.JsonWebTokens.JsonWebTokenHandler().CreateToken(new Microsoft.IdentityModel.Tokens.SecurityTokenDescriptor
        {
            Issuer = service.Auth.Issuer, Audience = service.Auth.Audience, IssuedAt = now, NotBefore = now, Expires = now.AddMinutes(5),
            Claims = new Dictionary<string, object> { ["sub"] = "crit", ["tenant"] = "tenant-devtoken", ["roles"] = new[] { "runner" } },
            AdditionalHeaderClaims = new Dictionary<string, object> { ["crit"] = new[] { "x-bind" }, ["x-bind"] = "channel" },
            SigningCredentials = new(keys.PrivateKey, Microsoft.IdentityModel.Tokens.SecurityAlgorithms.EcdsaSha256),
        });

        var (response, _) = await service.Client(token).RunAsync(new { language = "shell", code = "echo no" });

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
    }

    [Fact]
    public async Task ATokenLivingLongerThanTheMaximumIsRefused()
    {
        var longLived = Sandbox.Audited.Api.Auth.DevelopmentTokens.Mint(service.Auth, "forever", "tenant-devtoken", ["runner"], TimeSpan.FromDays(30));

        var (response, _) = await service.Client(longLived).RunAsync(new { language = "shell", code = "echo no" });

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
    }

    [Fact]
    public async Task SbxTokenRefusesATtlTheServiceWouldRefuse()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Auth:Mode"] = "development", ["Auth:Issuer"] = service.Auth.Issuer, ["Auth:Audience"] = service.Auth.Audience,
            ["Auth:DevelopmentKeyPath"] = service.KeyPath,
        }).Build();

        var refused = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            Sandbox.Audited.Api.Hosting.Commands.RunAsync(["token", "--sub", "ci", "--tenant", "acme", "--ttl", "30d"], configuration));

        Assert.Contains("MaxTokenLifetimeMinutes", refused.Message);
        Assert.Equal(0, await Sandbox.Audited.Api.Hosting.Commands.RunAsync(["token", "--sub", "ci", "--tenant", "acme", "--ttl", "2h"], configuration));
    }

    [Fact]
    public async Task AFloodOfBadTokensIsRecordedAsOneCountedEventForTheServiceAuditors()
    {
        var since = DateTimeOffset.UtcNow.AddSeconds(-1);
        var flood = service.Client("not-a-jwt");
        for (var i = 0; i < 50; i++)
            Assert.Equal(HttpStatusCode.Unauthorized, (await flood.GetAsync("/v1/audit/checkpoints/key")).StatusCode);
        await service.Services.GetRequiredService<Sandbox.Audited.Api.Auth.RefusalCounter>().FlushAsync(all: true, CancellationToken.None);

        var (_, page) = await service.Client(service.Token("sam", "service", "auditor")).GetJsonAsync(
            "/v1/audit/events?type=access_refused&from=" + Uri.EscapeDataString(since.ToString("O")));

        var events = page["items"]!.AsArray().Where(e => e!.Str("data.route") == "/v1/audit/checkpoints/key").ToList();
        // One event per window (two if the flood straddled a window's end), carrying the count.
        Assert.InRange(events.Count, 1, 2);
        Assert.All(events, e => Assert.Equal(("401", "malformed"), (e!.Str("data.status"), e!.Str("data.reason"))));
        Assert.Equal(50, events.Sum(e => int.Parse(e!.Str("data.count"))));
        // A tenant's own auditor does not see the service's stream.
        var (_, theirs) = await service.Client(service.Token("tia", "tenant-devtoken", "auditor")).GetJsonAsync("/v1/audit/events?type=access_refused");
        Assert.Empty(theirs["items"]!.AsArray());
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
