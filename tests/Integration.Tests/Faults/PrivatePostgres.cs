using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Npgsql;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Faults;

/// <summary>
/// A PostgreSQL cluster of the test's own (initdb into a temporary folder, pg_ctl on a free loopback port), with the
/// sandbox_* roles that ./sbx creates, so that a fault test may stop and start it without touching the shared cluster.
/// Needs root (the server runs as the postgres user) and the PostgreSQL server binaries, as ./sbx up installs them.
/// </summary>
public sealed class PrivatePostgres : IAsyncDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "sbx-pg-" + Guid.NewGuid().ToString("N")[..8]);
    private readonly string _bin;
    private readonly int _port;

    private PrivatePostgres(string bin, int port)
    {
        _bin = bin;
        _port = port;
    }

    private string Data => Path.Combine(_root, "data");

    /// <summary>The superuser connection (sandbox_admin, with the shared cluster's password) on the private port.</summary>
    public string AdminConnection =>
        new NpgsqlConnectionStringBuilder(TestEnvironment.AdminConnection) { Host = "127.0.0.1", Port = _port, Pooling = false }.ConnectionString;

    public static async Task<PrivatePostgres> StartAsync()
    {
        var bin = Directory.GetDirectories("/usr/lib/postgresql").Order().Select(d => Path.Combine(d, "bin")).LastOrDefault(d => File.Exists(Path.Combine(d, "initdb")))
            ?? throw new InvalidOperationException("No PostgreSQL server binaries under /usr/lib/postgresql (./sbx up installs them).");
        var pg = new PrivatePostgres(bin, FreePort());
        Directory.CreateDirectory(pg._root);
        await RunAsync("chown", "postgres:postgres", pg._root);
        await pg.AsPostgresAsync("initdb", "-D", pg.Data, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync");
        await pg.StartServerAsync();
        var admin = new NpgsqlConnectionStringBuilder(TestEnvironment.AdminConnection).Password;
        await pg.AsPostgresAsync("psql", "-h", pg._root, "-p", pg._port.ToString(System.Globalization.CultureInfo.InvariantCulture), "-U", "postgres",
            "-v", "ON_ERROR_STOP=1", "-c", $"""
                CREATE ROLE sandbox_admin LOGIN SUPERUSER PASSWORD '{admin}';
                CREATE ROLE sandbox_owner;
                CREATE ROLE sandbox_app LOGIN PASSWORD '{TestEnvironment.AppPassword}';
                CREATE ROLE sandbox_auditor LOGIN PASSWORD '{TestEnvironment.AuditorPassword}';
                """);
        return pg;
    }

    /// <summary>The database goes away: fast shutdown, open connections are cut.</summary>
    public Task StopAsync() => AsPostgresAsync("pg_ctl", "-D", Data, "-m", "fast", "-w", "stop");

    public Task StartServerAsync() => AsPostgresAsync("pg_ctl", "-D", Data, "-l", Path.Combine(_root, "server.log"), "-w", "-o",
        $"-p {_port} -k {_root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", "start");

    public async ValueTask DisposeAsync()
    {
        try
        {
            await AsPostgresAsync("pg_ctl", "-D", Data, "-m", "immediate", "-w", "stop");
        }
        catch (InvalidOperationException)
        {
            // Already stopped.
        }
        Directory.Delete(_root, recursive: true);
    }

    private Task AsPostgresAsync(string tool, params string[] args) =>
        RunAsync("runuser", ["-u", "postgres", "--", Path.Combine(_bin, tool), .. args]);

    private static async Task RunAsync(string file, params string[] args)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = "/tmp" };
        foreach (var arg in args)
            info.ArgumentList.Add(arg);
        using var process = Process.Start(info)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} exited with {process.ExitCode}: {await output}{await error}");
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
