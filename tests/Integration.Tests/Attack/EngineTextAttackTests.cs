using System.Net;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Attack;

/// <summary>A node whose Docker endpoint is a socket nobody listens on (the engine is away), for the whole collection.</summary>
public sealed class EngineGoneFixture : ServiceFixture, IAsyncLifetime
{
    public string SocketPath { get; } = Path.Combine(Path.GetTempPath(), "sbx-engine-gone-" + Guid.NewGuid().ToString("N")[..8] + ".sock");

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Executor:DockerEndpoint"] = "unix://" + SocketPath,
        ["Executor:NodeId"] = "gone-" + Guid.NewGuid().ToString("N")[..8],
    };
}

[CollectionDefinition(Name)]
public sealed class EngineGoneCollection : ICollectionFixture<EngineGoneFixture>
{
    public const string Name = "attack2-engine-gone";
}

/// <summary>
/// Attack on the fixed 503 texts: the answer to the run no longer carries the engine's own error (its socket, the errno),
/// but the same client reads it one GET later from the run's record, where it stays for good.
/// </summary>
[Collection(EngineGoneCollection.Name)]
public sealed class EngineTextAttackTests(EngineGoneFixture service)
{
    [Fact]
    public async Task TheRunsRecordDoesNotCarryTheEnginesOwnErrorText()
    {
        using var runner = service.Runner("alice", "tenant-attack2-engine");
        var (response, problem) = await runner.RunAsync(new { language = "shell", code = "echo 1" });
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        var runId = problem.Str("runId");
        Assert.NotEqual("", runId);

        var (_, run) = await runner.GetJsonAsync($"/v1/runs/{runId}");
        var (_, events) = await runner.GetJsonAsync($"/v1/runs/{runId}/events");
        foreach (var text in new[] { run.ToJsonString(), events.ToJsonString() })
        {
            Assert.DoesNotContain(SocketName, text, StringComparison.Ordinal);
            Assert.DoesNotContain("Connection refused", text, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain("No such file", text, StringComparison.OrdinalIgnoreCase);
        }
    }

    private string SocketName => Path.GetFileName(service.SocketPath);
}
