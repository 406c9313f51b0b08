using Microsoft.AspNetCore.Mvc.Testing;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Cluster;

/// <summary>
/// Two nodes of the same binary on one database, in one test process: an api-only node (no engine, no pool) and an
/// executor-only node (no /v1 API). Runs posted to the api node reach the executor only through the PostgreSQL run queue.
/// Short queue timings so that a silent node is swept within seconds.
/// </summary>
public sealed class ClusterFixture : IAsyncLifetime
{
    public const int LeaseSeconds = 2;
    public const int GraceSeconds = 3;
    public const int QueueWaitMs = 1500;

    private WebApplicationFactory<Program>? _api;
    private WebApplicationFactory<Program>? _executor;

    public TestDatabase Database { get; } = new();

    public string ApiNode { get; } = "api-" + Guid.NewGuid().ToString("N")[..8];

    public string ExecutorNode { get; } = "exec-" + Guid.NewGuid().ToString("N")[..8];

    public string KeyPath { get; } = Path.Combine(Path.GetTempPath(), "sbx-cluster-key-" + Guid.NewGuid().ToString("N") + ".pem");

    public string JournalDirectory { get; } = Path.Combine(Path.GetTempPath(), "sbx-cluster-journal-" + Guid.NewGuid().ToString("N"));

    public AuthOptions Auth => TestNode.Auth(KeyPath);

    public IServiceProvider ApiServices => _api!.Services;

    public IServiceProvider ExecutorServices => _executor!.Services;

    public async Task InitializeAsync()
    {
        await Database.CreateAsync();
        DevelopmentKeys.Create(KeyPath);
        _executor = Node(ExecutorNode, "executor", new() { ["Admission:MaxConcurrentRuns"] = "1" });
        _executor.StartServer();
        _api = Node(ApiNode, "api", new() { ["Admission:MaxQueueWaitMs"] = QueueWaitMs.ToString() });
        _api.StartServer();
    }

    /// <summary>One more node of the cluster, e.g. an api node that reaches PostgreSQL through a proxy the test cuts; the caller disposes it.</summary>
    public WebApplicationFactory<Program> StartNode(string nodeId, string roles, string connection, Dictionary<string, string?> extra)
    {
        var factory = Node(nodeId, roles, extra, connection);
        factory.StartServer();
        return factory;
    }

    private WebApplicationFactory<Program> Node(string nodeId, string roles, Dictionary<string, string?> extra, string? connection = null)
    {
        var settings = TestNode.Settings(connection ?? Database.AppConnection, KeyPath, nodeId);
        settings["Executor:JournalDirectory"] = JournalDirectory;
        settings["Node:Roles"] = roles;
        settings["Queue:LeaseSeconds"] = LeaseSeconds.ToString();
        settings["Queue:HeartbeatSeconds"] = "1";
        settings["Queue:AbandonGraceSeconds"] = GraceSeconds.ToString();
        return TestNode.Create(settings, extra);
    }

    public HttpClient Api(string subject, string tenant) => Client(_api!, subject, tenant);

    public HttpClient Client(WebApplicationFactory<Program> node, string subject, string tenant)
    {
        var client = node.CreateClient();
        client.Timeout = TimeSpan.FromSeconds(60);
        client.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer",
            DevelopmentTokens.Mint(Auth, subject, tenant, [Roles.Runner], TimeSpan.FromMinutes(30)));
        return client;
    }

    public HttpClient ExecutorHttp() => _executor!.CreateClient();

    public async Task DisposeAsync()
    {
        if (_api is not null)
            await _api.DisposeAsync();
        if (_executor is not null)
            await _executor.DisposeAsync();
        await Database.DisposeAsync();
        File.Delete(KeyPath);
        if (Directory.Exists(JournalDirectory))
            Directory.Delete(JournalDirectory, recursive: true);
    }
}

[CollectionDefinition(Name)]
public sealed class ClusterCollection : ICollectionFixture<ClusterFixture>
{
    public const string Name = "cluster";
}
