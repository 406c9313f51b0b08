using Npgsql;

namespace Sandbox.Audited.Tests.Infrastructure;

/// <summary>What `./sbx test` provides: a superuser connection, role passwords and the repository root.</summary>
public static class TestEnvironment
{
    public static string AdminConnection =>
        Environment.GetEnvironmentVariable("SBX_TEST_ADMIN_CONNECTION")
        ?? throw new InvalidOperationException("SBX_TEST_ADMIN_CONNECTION is not set: run the tests with `./sbx test`.");

    public static string AppPassword => Required("SBX_TEST_APP_PASSWORD");

    public static string AuditorPassword => Required("SBX_TEST_AUDITOR_PASSWORD");

    public static string RepoRoot { get; } = FindRoot();

    public static string ConnectionFor(string database, string user, string password) =>
        new NpgsqlConnectionStringBuilder(AdminConnection) { Database = database, Username = user, Password = password }.ConnectionString;

    public static string AdminConnectionFor(string database) =>
        new NpgsqlConnectionStringBuilder(AdminConnection) { Database = database }.ConnectionString;

    private static string Required(string name) =>
        Environment.GetEnvironmentVariable(name) ?? throw new InvalidOperationException($"{name} is not set: run the tests with `./sbx test`.");

    private static string FindRoot()
    {
        var fromEnv = Environment.GetEnvironmentVariable("SBX_REPO_ROOT");
        if (!string.IsNullOrEmpty(fromEnv))
            return fromEnv;
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Sandbox.Audited.sln")))
            dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("Cannot find the repository root.");
    }
}
