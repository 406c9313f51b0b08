using Microsoft.AspNetCore.Mvc.Testing;

namespace Sandbox.Audited.Tests.Api;

/// <summary>Auth never silently turns itself off: a missing or half-set configuration stops start-up.</summary>
public sealed class AuthConfigurationTests
{
    [Theory]
    [InlineData("", "issuer", "audience", "https://127.0.0.1:1", "false", "Auth:Mode")]
    [InlineData("none", "issuer", "audience", "https://127.0.0.1:1", "false", "Auth:Mode")]
    [InlineData("oidc", "", "audience", "https://127.0.0.1:1", "false", "Auth:Issuer")]
    [InlineData("oidc", "issuer", "", "https://127.0.0.1:1", "false", "Auth:Audience")]
    [InlineData("oidc", "issuer", "audience", "", "false", "Auth:Authority")]
    [InlineData("oidc", "issuer", "audience", "http://127.0.0.1:1", "false", "https")]
    [InlineData("oidc", "issuer", "audience", "http://idp.invalid", "true", "https")]
    [InlineData("development", "issuer", "audience", "", "false", "Auth:DevelopmentKeyPath")]
    public void HalfSetAuthConfigurationStopsStartUp(string mode, string issuer, string audience, string authority, string allowHttp, string named)
    {
        using var factory = new WebApplicationFactory<Program>().WithWebHostBuilder(builder =>
        {
            builder.UseSetting("Auth:Mode", mode);
            builder.UseSetting("Auth:Issuer", issuer);
            builder.UseSetting("Auth:Audience", audience);
            builder.UseSetting("Auth:Authority", authority);
            builder.UseSetting("Auth:AllowHttpAuthority", allowHttp);
            builder.UseSetting("Auth:DevelopmentKeyPath", "/nonexistent/key.pem");
        });

        var error = Assert.ThrowsAny<Exception>(() => factory.Server);

        Assert.Contains("refusing to start", error.GetBaseException().Message);
        Assert.Contains(named, error.GetBaseException().Message);
    }
}
