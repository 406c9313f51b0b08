using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Api;

/// <summary>Development auth, a small per-subject rate limit and a callback secret for one tenant.</summary>
public sealed class ApiFixture : ServiceFixture
{
    public const string CallbackTenant = "tenant-callbacks";
    public const string CallbackSecret = "test-callback-secret";
    public const int Burst = 6;

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["RateLimit:BurstLimit"] = Burst.ToString(),
        ["RateLimit:TokensPerPeriod"] = "1",
        ["RateLimit:PeriodSeconds"] = "60",
        [$"Callbacks:Secrets:{CallbackTenant}"] = CallbackSecret,
        ["Callbacks:InitialBackoffMs"] = "100",
        ["Callbacks:AllowLoopback"] = "true", // the tests' own receiver listens on loopback
    };
}

[CollectionDefinition(Name)]
public sealed class ApiCollection : ICollectionFixture<ApiFixture>
{
    public const string Name = "api";
}
