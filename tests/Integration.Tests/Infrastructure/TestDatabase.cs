using Npgsql;
using Sandbox.Audited.Audit.Migrations;

namespace Sandbox.Audited.Tests.Infrastructure;

/// <summary>
/// A throw-away database with every migration applied, dropped when the fixture ends. On the shared cluster by default;
/// a fault test passes the superuser connection of a private cluster it may stop and start.
/// </summary>
public sealed class TestDatabase(string? serverAdminConnection = null) : IAsyncDisposable
{
    private string ServerAdmin => serverAdminConnection ?? TestEnvironment.AdminConnection;

    public string Name { get; } = "sbx_test_" + Guid.NewGuid().ToString("N")[..12];

    public string AppConnection => For("sandbox_app", TestEnvironment.AppPassword);

    public string AuditorConnection => For("sandbox_auditor", TestEnvironment.AuditorPassword);

    public string AdminConnection => new NpgsqlConnectionStringBuilder(ServerAdmin) { Database = Name }.ConnectionString;

    private string For(string user, string password) =>
        new NpgsqlConnectionStringBuilder(ServerAdmin) { Database = Name, Username = user, Password = password }.ConnectionString;

    public async Task CreateAsync()
    {
        await using (var admin = new NpgsqlConnection(ServerAdmin))
        {
            await admin.OpenAsync();
            await using var create = new NpgsqlCommand($"CREATE DATABASE {Name} OWNER sandbox_owner", admin);
            await create.ExecuteNonQueryAsync();
        }
        await MigrationRunner.ApplyAsync(AdminConnection, Path.Combine(TestEnvironment.RepoRoot, "migrations"), TextWriter.Null, CancellationToken.None);
    }

    public async Task<T?> ScalarAsync<T>(string sql, params object[] parameters)
    {
        await using var connection = new NpgsqlConnection(AdminConnection);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        foreach (var p in parameters)
            command.Parameters.AddWithValue(p);
        var value = await command.ExecuteScalarAsync();
        return value is null or DBNull ? default : (T)value;
    }

    public async Task ExecuteAsync(string sql, params object[] parameters)
    {
        await using var connection = new NpgsqlConnection(AdminConnection);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        foreach (var p in parameters)
            command.Parameters.AddWithValue(p);
        await command.ExecuteNonQueryAsync();
    }

    /// <summary>
    /// Runs sql on the server's own admin database, not this one: for ALTER DATABASE settings that must apply, and be undone,
    /// even while this database refuses the statement (a read-only default applies to the test's own new connections too).
    /// </summary>
    public async Task ExecuteOnServerAsync(string sql)
    {
        await using var connection = new NpgsqlConnection(ServerAdmin);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    /// <summary>
    /// An outage of this database for the service's role, and for nothing else on the shared cluster: its open connections
    /// are ended (57P01, as when the server shuts down) and new ones refused (53300, too many connections) until the
    /// returned handle is disposed. The test's own admin connections still get in.
    /// </summary>
    public async Task<IAsyncDisposable> AwayForServiceAsync()
    {
        await ExecuteAsync($"ALTER DATABASE {Name} CONNECTION LIMIT 0");
        await ExecuteAsync("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND usename = 'sandbox_app'", Name);
        return new Back(this);
    }

    private sealed class Back(TestDatabase database) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync() => await database.ExecuteAsync($"ALTER DATABASE {database.Name} CONNECTION LIMIT -1");
    }

    public async ValueTask DisposeAsync()
    {
        NpgsqlConnection.ClearAllPools();
        await using var admin = new NpgsqlConnection(ServerAdmin);
        await admin.OpenAsync();
        await using var drop = new NpgsqlCommand($"DROP DATABASE IF EXISTS {Name} WITH (FORCE)", admin);
        await drop.ExecuteNonQueryAsync();
    }
}
