using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Api;

/// <summary>The service in production auth mode against a real OpenID Connect provider on loopback.</summary>
public sealed class OidcFixture : ServiceFixture
{
    public const string Tenant = "tenant-oidc";
    public const string Audience = "urn:sandbox:api";

    public OidcProvider Provider { get; } = new(
    [
        new OidcClient("oidc-runner", "runner-secret", Tenant, ["runner"]),
        new OidcClient("oidc-auditor", "auditor-secret", Tenant, ["auditor"]),
        new OidcClient("oidc-scoped", "scoped-secret", Tenant, []),
        new OidcClient("oidc-short", "short-secret", Tenant, ["runner"], TtlSeconds: 1),
        new OidcClient("oidc-no-tenant", "no-tenant-secret", null, ["runner"]),
    ]);

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Auth:Mode"] = "oidc",
        ["Auth:Authority"] = Provider.Issuer,
        ["Auth:AllowHttpAuthority"] = "true",
        ["Auth:Issuer"] = Provider.Issuer,
        ["Auth:Audience"] = Audience,
        ["Auth:ClockSkewSeconds"] = "1",
        ["Auth:UnknownKeyRefreshSeconds"] = "1",
    };

    public override async Task InitializeAsync()
    {
        await Provider.StartAsync([OidcProvider.NewKey()]);
        await base.InitializeAsync();
    }

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await Provider.DisposeAsync();
    }
}

[CollectionDefinition(Name)]
public sealed class OidcCollection : ICollectionFixture<OidcFixture>
{
    public const string Name = "oidc";
}
