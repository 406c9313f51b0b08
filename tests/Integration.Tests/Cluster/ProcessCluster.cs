using System.Net;
using Npgsql;
using Sandbox.Audited.Api.Auth;
using AuthRoles = Sandbox.Audited.Domain.Runs.Roles;
using Sandbox.Audited.Tests.Executor;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Cluster;

/// <summary>
/// Four real service processes on one throw-away database: two api nodes (Node:Roles=api) and two executor nodes
/// (Node:Roles=executor), each with its own node id and loopback port, started as an operator would (environment
/// variables, the built Api dll through ServiceProcess). Each node's PostgreSQL connections carry its node id as
/// application_name, so the database itself says which node holds a lock or a connection. One cluster per collection;
/// a test that stops a node brings the cluster back whole first (<see cref="EnsureAllUpAsync"/>), and tests keep
/// apart by their tenants.
/// </summary>
public sealed class ProcessCluster : IAsyncLifetime
{
    private readonly string _suffix = Guid.NewGuid().ToString("N")[..6];
    private readonly string _keyPath = Path.Combine(Path.GetTempPath(), "sbx-test-key-" + Guid.NewGuid().ToString("N") + ".pem");
    private readonly string _journal = Path.Combine(Path.GetTempPath(), "sbx-cluster-journal-" + Guid.NewGuid().ToString("N")[..8]);

    public TestDatabase Database { get; } = new();

    public List<ClusterNode> Nodes { get; } = [];

    public IEnumerable<ClusterNode> ApiNodes => Nodes.Where(n => n.Roles == "api");

    public IEnumerable<ClusterNode> Executors => Nodes.Where(n => n.Roles == "executor");

    public ClusterNode Api(int i) => ApiNodes.ElementAt(i);

    public ClusterNode Executor(int i) => Executors.ElementAt(i);

    /// <summary>When the cluster started: the engine's event log is read from here.</summary>
    public DateTimeOffset Since { get; } = DateTimeOffset.UtcNow.AddSeconds(-1);

    /// <summary>
    /// Short leases so that a dead executor's runs are abandoned within seconds: lease 3 s, heartbeat every 1 s, grace 3 s.
    /// </summary>
    public static IReadOnlyDictionary<string, string> QueueSettings { get; } = new Dictionary<string, string>
    {
        ["Queue__LeaseSeconds"] = "3",
        ["Queue__HeartbeatSeconds"] = "1",
        ["Queue__AbandonGraceSeconds"] = "3",
    };

    public async Task InitializeAsync()
    {
        await Database.CreateAsync();
        DevelopmentKeys.Create(_keyPath);
        foreach (var (name, roles) in new[] { ("api-a", "api"), ("api-b", "api"), ("exec-a", "executor"), ("exec-b", "executor") })
            Nodes.Add(new ClusterNode(this, $"{name}-{_suffix}", roles, PortBelowEphemeralRange()));
        // Started together: four .NET start-ups in sequence would take most of the CI budget.
        await Task.WhenAll(Nodes.Select(n => n.StartAsync()));
        await Task.WhenAll(Nodes.Select(n => n.WaitReadyAsync()));
    }

    /// <summary>
    /// A free port below Linux's ephemeral range (32768 and up): a node keeps its port across restarts, and a port from that
    /// range could meanwhile become the local end of some outgoing connection, so that the restarted node could not bind it.
    /// </summary>
    private static int PortBelowEphemeralRange()
    {
        while (true)
        {
            var port = Random.Shared.Next(20000, 32000);
            try
            {
                var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, port);
                listener.Start();
                listener.Stop();
                return port;
            }
            catch (System.Net.Sockets.SocketException)
            {
                // Taken: try another.
            }
        }
    }

    /// <summary>Restarts any node a previous test stopped or killed, and waits until every node is ready.</summary>
    public async Task EnsureAllUpAsync()
    {
        await Task.WhenAll(Nodes.Where(n => !n.IsRunning).Select(n => n.StartAsync()));
        await Task.WhenAll(Nodes.Select(n => n.WaitReadyAsync()));
    }

    public string Token(string subject, string tenant, params string[] roles) =>
        new ServiceProcess.Setup(Database, _keyPath, "cluster").Token(subject, tenant, roles);

    internal ServiceProcess.Setup SetupFor(string nodeId) => new(Database, _keyPath, nodeId);

    internal Dictionary<string, string> SettingsFor(ClusterNode node)
    {
        var settings = new Dictionary<string, string>(QueueSettings)
        {
            ["Node__Roles"] = node.Roles,
            ["Executor__JournalDirectory"] = _journal,
            // Node id as application_name: pg_stat_activity and pg_locks then name the node behind each connection.
            ["ConnectionStrings__Sandbox"] = new NpgsqlConnectionStringBuilder(Database.AppConnection) { ApplicationName = node.Id }.ConnectionString,
        };
        return settings;
    }

    /// <summary>
    /// The nodes whose connections hold a session-level advisory lock between transactions: the async daemon's leadership
    /// (HotCold keeps a dedicated connection idle with its locks). Transaction-level locks (the audit tree's) are left out:
    /// their connection is never idle while it holds them.
    /// </summary>
    public async Task<List<string>> AdvisoryLockHoldersAsync()
    {
        await using var connection = new NpgsqlConnection(Database.AdminConnection);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("""
            SELECT DISTINCT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND a.state = 'idle'
            """, connection);
        var holders = new List<string>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
            holders.Add(reader.GetString(0));
        return holders;
    }

    /// <summary>PostgreSQL connections open per node (by application_name): what each node costs against max_connections.</summary>
    public async Task<string> ConnectionsPerNodeAsync()
    {
        await using var connection = new NpgsqlConnection(Database.AdminConnection);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = ANY($1) GROUP BY 1 ORDER BY 1", connection);
        command.Parameters.AddWithValue(Nodes.Select(n => n.Id).ToArray());
        var counts = new List<string>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
            counts.Add($"{reader.GetString(0)}: {reader.GetInt64(1)}");
        return string.Join(", ", counts);
    }

    public async Task DisposeAsync()
    {
        foreach (var node in Nodes)
            await node.DisposeAsync();
        foreach (var node in Nodes)
            await Containers.RemoveAllOfNodeAsync(node.Id);
        await Database.DisposeAsync();
        File.Delete(_keyPath);
        if (Directory.Exists(_journal))
            Directory.Delete(_journal, recursive: true);
    }
}

/// <summary>One node of the cluster: a service process that keeps its node id and port across restarts.</summary>
public sealed class ClusterNode(ProcessCluster cluster, string id, string roles, int port) : IAsyncDisposable
{
    private ServiceProcess? _process;

    public string Id { get; } = id;

    public string Roles { get; } = roles;

    public Uri Address { get; } = new($"http://127.0.0.1:{port}");

    public bool IsRunning => _process is { HasExited: false };

    public int Pid => _process?.Pid ?? 0;

    public string Log => _process?.Log ?? "";

    public async Task StartAsync()
    {
        if (_process is not null)
            await _process.DisposeAsync();
        _process = null;
        // As systemd's Restart=on-failure would: a start-up that exits (PostgreSQL too busy to answer within Npgsql's
        // connect timeout, seen here at load average 100) is tried again, twice.
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                _process = await ServiceProcess.StartAsync(cluster.SetupFor(Id), cluster.SettingsFor(this), port, TimeSpan.FromSeconds(180));
                return;
            }
            catch (InvalidOperationException) when (attempt < 3)
            {
                await Task.Delay(TimeSpan.FromSeconds(2));
            }
        }
    }

    public Task WaitReadyAsync() =>
        Eventually.WaitUntilAsync(async () => await ReadyAsync(), () => $"node {Id} never turned ready:\n{Log}", TimeSpan.FromSeconds(120), pollMs: 200);

    public async Task<bool> ReadyAsync()
    {
        using var client = new HttpClient { BaseAddress = Address, Timeout = TimeSpan.FromSeconds(5) };
        try
        {
            return (await client.GetAsync("/readyz")).StatusCode == HttpStatusCode.OK;
        }
        catch (HttpRequestException)
        {
            return false;
        }
        catch (TaskCanceledException)
        {
            return false;
        }
    }

    public HttpClient Client(string token)
    {
        var client = new HttpClient { BaseAddress = Address, Timeout = TimeSpan.FromSeconds(60) };
        client.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);
        return client;
    }

    public HttpClient Runner(string subject, string tenant) => Client(cluster.Token(subject, tenant, AuthRoles.Runner));

    /// <summary>kill -9: no drain, no release of leases or locks except what PostgreSQL drops with the connections.</summary>
    public Task CrashAsync() => _process!.CrashAsync();

    /// <summary>SIGTERM, then waits for the graceful exit.</summary>
    public async Task StopAsync()
    {
        _process!.Terminate();
        Assert.True(await _process.WaitForExitAsync(TimeSpan.FromSeconds(45)), $"node {Id} did not exit within 45 s of SIGTERM:\n{Log}");
    }

    public async ValueTask DisposeAsync()
    {
        if (_process is not null)
            await _process.DisposeAsync();
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ProcessClusterCollection : ICollectionFixture<ProcessCluster>
{
    public const string Name = "process-cluster";
}
