using System.Net;
using System.Net.Sockets;
using Npgsql;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Sandbox.Audited.Tests.Executor;

/// <summary>
/// The real service process started with what an operator gets wrong or what is down: each failed start ends with its
/// sysexits code and one line on stderr saying what to fix, never an abort (134) with an unhandled exception's stack trace.
/// 78 (EX_CONFIG) is what the systemd unit does not restart; 69 (EX_UNAVAILABLE) it restarts.
/// </summary>
public sealed class StartFailureTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly TestDatabase _database = new();
    private readonly string _keyPath = Path.Combine(Path.GetTempPath(), "sbx-test-key-" + Guid.NewGuid().ToString("N") + ".pem");
    private ServiceProcess.Setup _setup = null!;

    public async Task InitializeAsync()
    {
        await _database.CreateAsync();
        DevelopmentKeys.Create(_keyPath);
        _setup = new ServiceProcess.Setup(_database, _keyPath, "start-" + Guid.NewGuid().ToString("N")[..8]);
    }

    [Fact]
    public async Task AnInvalidPolicyBundleExitsWithCode78AndSaysWhichFileToFix() =>
        await ExitsAsync(new() { ["Policies__Directory"] = "/nonexistent/policies" }, 78,
            "sandbox-audited: not starting (exit code 78): The policy bundle is invalid (1 error(s)): /nonexistent/policies: policy directory does not exist.");

    [Fact]
    public async Task AMissingCheckpointKeyExitsWithCode78AndNamesTheSetting() =>
        await ExitsAsync(new() { ["Audit__CheckpointKeyPath"] = "/nonexistent/checkpoint.pem" }, 78,
            "sandbox-audited: not starting (exit code 78): Audit:CheckpointKeyPath (or Audit:PublishedCheckpointKeys) '/nonexistent/checkpoint.pem' cannot be read as a key");

    [Fact]
    public async Task MissingAuthenticationSettingsExitWithCode78() =>
        await ExitsAsync(new() { ["Auth__DevelopmentKeyPath"] = "" }, 78,
            "sandbox-audited: not starting (exit code 78): Authentication is not configured; refusing to start: Auth:DevelopmentKeyPath");

    [Fact]
    public async Task AWrongDatabasePasswordExitsWithCode78AndPointsAtTheConnectionString() =>
        await ExitsAsync(new() { ["ConnectionStrings__Sandbox"] = new NpgsqlConnectionStringBuilder(_database.AppConnection) { Password = "not-the-password" }.ConnectionString }, 78,
            "sandbox-audited: not starting (exit code 78): 28P01: password authentication failed for user \"sandbox_app\". PostgreSQL refused the service's login: check the user, password and database in ConnectionStrings:Sandbox");

    [Fact]
    public async Task PostgreSQLNotAnsweringExitsWithCode69SoThatTheSupervisorStartsItAgain()
    {
        using var nothing = new TcpListener(IPAddress.Loopback, 0); // a port that surely refuses: bound, never listening
        nothing.Server.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var port = ((IPEndPoint)nothing.Server.LocalEndPoint!).Port;
        await ExitsAsync(new() { ["ConnectionStrings__Sandbox"] = new NpgsqlConnectionStringBuilder(_database.AppConnection) { Port = port }.ConnectionString }, 69,
            $"sandbox-audited: not starting (exit code 69): Failed to connect to 127.0.0.1:{port}. PostgreSQL cannot be reached");
    }

    [Fact]
    public async Task ADatabaseWithoutTheMigrationsExitsWithCode78AndSaysToApplyThem()
    {
        var empty = "sbx_test_empty_" + Guid.NewGuid().ToString("N")[..12];
        await _database.ExecuteOnServerAsync($"CREATE DATABASE {empty} OWNER sandbox_owner");
        try
        {
            await ExitsAsync(new() { ["ConnectionStrings__Sandbox"] = new NpgsqlConnectionStringBuilder(_database.AppConnection) { Database = empty }.ConnectionString }, 78,
                "The database schema is older than this binary, or the login is not the service's own: apply the migrations");
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            await _database.ExecuteOnServerAsync($"DROP DATABASE IF EXISTS {empty} WITH (FORCE)");
        }
    }

    [Fact]
    public async Task AnAddressInUseExitsWithCode78()
    {
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        var port = ((IPEndPoint)taken.LocalEndpoint).Port;
        await ExitsAsync([], 78,
            $"sandbox-audited: not starting (exit code 78): Failed to bind to address http://127.0.0.1:{port}: address already in use. Another process listens on this address", port);
    }

    private async Task ExitsAsync(Dictionary<string, string> settings, int code, string line, int? port = null)
    {
        var (exitCode, log) = await ServiceProcess.RunToExitAsync(_setup, settings, TimeSpan.FromSeconds(90), port);
        output.WriteLine(log);

        Assert.Equal(code, exitCode);
        Assert.Contains(line, log, StringComparison.Ordinal);
        Assert.Single(log.Split('\n'), l => l.StartsWith("sandbox-audited: not starting", StringComparison.Ordinal));
        Assert.DoesNotContain("Unhandled exception", log, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", log, StringComparison.Ordinal); // no stack trace, on stdout or stderr
    }

    public async Task DisposeAsync()
    {
        await Containers.RemoveAllOfNodeAsync(_setup.NodeId); // a start that failed late may have begun filling its pool
        await _database.DisposeAsync();
        File.Delete(_keyPath);
    }
}
