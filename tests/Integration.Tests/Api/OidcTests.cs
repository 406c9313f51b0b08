using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.IdentityModel.Tokens;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Api;

/// <summary>Production auth: tokens from a real OpenID Connect provider are accepted; forged, stale or misdirected ones are not.</summary>
[Collection(OidcCollection.Name)]
public sealed class OidcTests(OidcFixture service)
{
    [Fact]
    public async Task ServiceAcceptsAClientCredentialsTokenFromTheProvider()
    {
        var token = await service.Provider.TokenAsync("oidc-runner");

        var (response, body) = await service.Client(token).RunAsync(new { language = "shell", code = "echo from-oidc" });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("succeeded", body.Str("status"));
        Assert.Equal("from-oidc\n", body.Str("stdout.content"));
        Assert.Equal("oidc-runner", body.Str("subject"));
        Assert.Equal(OidcFixture.Tenant, body.Str("tenant"));
    }

    [Fact]
    public async Task RolesMayComeFromScopes()
    {
        var token = await service.Provider.TokenAsync("oidc-scoped", scope: "runner");

        var (response, body) = await service.Client(token).RunAsync(new { language = "shell", code = "echo scoped" });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("scoped\n", body.Str("stdout.content"));
    }

    [Fact]
    public async Task AuditorTokenFromTheProviderCannotRun()
    {
        var token = await service.Provider.TokenAsync("oidc-auditor");

        var (response, body) = await service.Client(token).RunAsync(new { language = "shell", code = "echo no" });

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal("/problems/forbidden", body.Str("type"));
    }

    [Fact]
    public async Task TokenWithoutTenantIsRejected() =>
        await AssertRejectedAsync(await service.Provider.TokenAsync("oidc-no-tenant"));

    [Fact]
    public async Task ExpiredTokenIsRejected()
    {
        var token = await service.Provider.TokenAsync("oidc-short"); // lives 1 s; the service allows 1 s of clock skew
        await Task.Delay(TimeSpan.FromSeconds(3.5));

        await AssertRejectedAsync(token);
    }

    [Fact]
    public async Task TokenForAnotherAudienceIsRejected() =>
        await AssertRejectedAsync(await service.Provider.TokenAsync("oidc-runner", resource: "urn:other:api"));

    [Fact]
    public async Task TokenFromAnotherIssuerWithTheSameKeysIsRejected()
    {
        await using var other = new OidcProvider([new OidcClient("oidc-runner", "runner-secret", OidcFixture.Tenant, ["runner"])]);
        await other.StartAsync(service.Provider.Keys);

        await AssertRejectedAsync(await other.TokenAsync("oidc-runner"));
    }

    [Fact]
    public async Task TokenWithUnknownKeyIdIsRejected()
    {
        using var key = RSA.Create(2048);
        var header = new JsonObject { ["alg"] = "RS256", ["typ"] = "at+jwt", ["kid"] = "unknown-" + Guid.NewGuid().ToString("N")[..8] };
        var signingInput = Encode(header) + "." + Encode(ValidClaims());
        var signature = key.SignData(Encoding.ASCII.GetBytes(signingInput), HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);

        await AssertRejectedAsync(signingInput + "." + Base64UrlEncoder.Encode(signature));
    }

    [Fact]
    public async Task TamperedPayloadIsRejected()
    {
        var parts = (await service.Provider.TokenAsync("oidc-runner")).Split('.');
        var claims = JsonNode.Parse(Base64UrlEncoder.Decode(parts[1]))!.AsObject();
        claims["tenant"] = "tenant-someone-else";

        await AssertRejectedAsync(parts[0] + "." + Encode(claims) + "." + parts[2]);
    }

    [Fact]
    public async Task UnsignedTokenWithAlgNoneIsRejected()
    {
        var header = new JsonObject { ["alg"] = "none", ["typ"] = "JWT" };

        await AssertRejectedAsync(Encode(header) + "." + Encode(ValidClaims()) + ".");
    }

    [Fact]
    public async Task Hs256TokenSignedWithTheProvidersPublicKeyIsRejected()
    {
        // The classic key-confusion attack: the public JWK, as served, used as an HMAC secret.
        var jwk = (await service.Provider.JwksAsync())["keys"]![0]!;
        var header = new JsonObject { ["alg"] = "HS256", ["typ"] = "JWT", ["kid"] = jwk["kid"]!.GetValue<string>() };
        var signingInput = Encode(header) + "." + Encode(ValidClaims());
        var signature = HMACSHA256.HashData(Encoding.UTF8.GetBytes(jwk.ToJsonString()), Encoding.ASCII.GetBytes(signingInput));

        await AssertRejectedAsync(signingInput + "." + Base64UrlEncoder.Encode(signature));
    }

    [Fact]
    public async Task RotatedSigningKeyIsPickedUpWithoutRestart()
    {
        var before = await service.Provider.TokenAsync("oidc-runner");
        Assert.Equal(HttpStatusCode.OK, (await service.Client(before).GetAsync("/v1/runtimes")).StatusCode);

        // The provider rotates: a new key signs, the old one is still published for tokens already issued.
        var rotated = new[] { OidcProvider.NewKey() }.Concat(service.Provider.Keys).ToList();
        await service.Provider.StopAsync();
        await service.Provider.StartAsync(rotated);
        var after = await service.Provider.TokenAsync("oidc-runner");
        Assert.Contains(rotated[0].Kid, Encoding.UTF8.GetString(Base64UrlEncoder.DecodeBytes(after.Split('.')[0])));
        await Task.Delay(TimeSpan.FromSeconds(1.2)); // the least time between two JWKS re-reads (Auth:UnknownKeyRefreshSeconds)

        var (response, body) = await service.Client(after).RunAsync(new { language = "shell", code = "echo rotated" });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("rotated\n", body.Str("stdout.content"));
        Assert.Equal(HttpStatusCode.OK, (await service.Client(before).GetAsync("/v1/runtimes")).StatusCode);
    }

    private JsonObject ValidClaims()
    {
        var now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        return new JsonObject
        {
            ["iss"] = service.Provider.Issuer, ["aud"] = OidcFixture.Audience, ["sub"] = "mallory", ["tenant"] = OidcFixture.Tenant,
            ["roles"] = new JsonArray("runner"), ["iat"] = now, ["nbf"] = now, ["exp"] = now + 300, ["client_id"] = "mallory",
        };
    }

    private static string Encode(JsonNode node) => Base64UrlEncoder.Encode(node.ToJsonString());

    // Other tests' runs in this database may still record late events (e.g. SandboxRemoved); requests are what must not grow.
    private const string RequestsRecorded = "SELECT count(*) FROM sandbox.mt_events WHERE type IN ('run_requested', 'request_rejected')";

    // Rejected with 401 as problem details, and nothing recorded: a run is only ever started after its request is recorded.
    private async Task AssertRejectedAsync(string token)
    {
        var before = await service.Database.ScalarAsync<long>(RequestsRecorded);

        var (response, body) = await service.Client(token).RunAsync(new { language = "shell", code = "echo pwned" });

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("/problems/unauthorized", body.Str("type"));
        Assert.Contains("Bearer", response.Headers.WwwAuthenticate.ToString());
        Assert.Equal(before, await service.Database.ScalarAsync<long>(RequestsRecorded));
    }
}
