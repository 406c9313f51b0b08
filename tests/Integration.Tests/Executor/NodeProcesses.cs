using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Executor;

/// <summary>
/// One node's service processes, started in turn (a restart keeps the node id) on a throw-away database and signing key of
/// their own; disposing stops them and removes what they left in the engine.
/// </summary>
public sealed class NodeProcesses(string nodeIdPrefix) : IAsyncLifetime
{
    private readonly string _keyPath = Path.Combine(Path.GetTempPath(), "sbx-test-key-" + Guid.NewGuid().ToString("N") + ".pem");
    private readonly List<ServiceProcess> _processes = [];

    public TestDatabase Database { get; } = new();
    public string NodeId { get; } = nodeIdPrefix + "-" + Guid.NewGuid().ToString("N")[..8];
    public ServiceProcess.Setup Setup { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        await Database.CreateAsync();
        DevelopmentKeys.Create(_keyPath);
        Setup = new ServiceProcess.Setup(Database, _keyPath, NodeId);
    }

    public async Task<ServiceProcess> StartAsync(IDictionary<string, string>? settings = null)
    {
        var process = await ServiceProcess.StartAsync(Setup, settings);
        _processes.Add(process);
        return process;
    }

    public async Task DisposeAsync()
    {
        foreach (var process in _processes)
            await process.DisposeAsync();
        await Containers.RemoveAllOfNodeAsync(NodeId);
        await Database.DisposeAsync();
        File.Delete(_keyPath);
    }
}
