using Microsoft.AspNetCore.Mvc.Testing;
using Sandbox.Audited.Api.Auth;

namespace Sandbox.Audited.Tests.Infrastructure;

/// <summary>One in-process node of the service as the integration tests start it: the settings every test node shares, then its own.</summary>
public static class TestNode
{
    /// <summary>Development tokens signed with the key at keyPath, as every test node accepts them.</summary>
    public static AuthOptions Auth(string keyPath) => new()
    {
        Mode = "development", Issuer = "sandbox-audited-test", Audience = "sandbox-audited", DevelopmentKeyPath = keyPath,
    };

    /// <summary>The settings every test node has: its database, development tokens signed with keyPath, the repository's policies and runtimes.</summary>
    public static Dictionary<string, string?> Settings(string connection, string keyPath, string nodeId) => new()
    {
        ["ConnectionStrings:Sandbox"] = connection,
        ["Auth:Mode"] = Auth(keyPath).Mode,
        ["Auth:Issuer"] = Auth(keyPath).Issuer,
        ["Auth:Audience"] = Auth(keyPath).Audience,
        ["Auth:DevelopmentKeyPath"] = keyPath,
        ["Policies:Directory"] = Path.Combine(TestEnvironment.RepoRoot, "policies"),
        ["Runtimes:Directory"] = Path.Combine(TestEnvironment.RepoRoot, "runtimes"),
        ["Executor:NodeId"] = nodeId,
        ["Executor:PoolSizePerLanguage"] = "1",
        ["Shutdown:GraceSeconds"] = "5",
        // Served from memory (TestServer): no connection a drain window would keep answering, so disposal does not wait for it.
        ["Shutdown:DrainSeconds"] = "0",
        ["Audit:LogName"] = "sandbox-audited/" + nodeId,
        ["Audit:CheckpointInterval"] = "0",
    };

    /// <summary>A node (not started) with these settings, overridden or extended by overrides.</summary>
    public static WebApplicationFactory<Program> Create(Dictionary<string, string?> settings, IEnumerable<KeyValuePair<string, string?>> overrides)
    {
        foreach (var (key, value) in overrides)
            settings[key] = value;
        return new WebApplicationFactory<Program>().WithWebHostBuilder(builder =>
        {
            foreach (var (key, value) in settings)
                builder.UseSetting(key, value);
        });
    }
}
