using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Deploy;

/// <summary>
/// deploy/: the systemd unit passes `systemd-analyze verify` (these machines do not run systemd as PID 1), and the
/// service starts in OIDC mode from the unit's command line and the example environment file, with only the
/// deployment-specific values (database, port, provider, paths) replaced as an operator would.
/// </summary>
public sealed class SystemdUnitTests
{
    private static readonly string Deploy = Path.Combine(TestEnvironment.RepoRoot, "deploy");
    private const string InstallDir = "/opt/sandbox-audited";

    [Fact]
    public async Task UnitPassesSystemdAnalyzeVerify()
    {
        var unit = Path.Combine(Directory.CreateTempSubdirectory("sbx-unit-").FullName, "sandbox-audited.service");
        // The install folder stands for this build's output, where the same executable exists.
        await File.WriteAllTextAsync(unit, (await File.ReadAllTextAsync(Path.Combine(Deploy, "systemd", "sandbox-audited.service"))).Replace(InstallDir, AppContext.BaseDirectory.TrimEnd('/')));

        var (exit, output) = await RunAsync("systemd-analyze", ["verify", unit]);

        Assert.True(exit == 0 && output.Trim().Length == 0, $"systemd-analyze verify exited {exit}:\n{output}");
    }

    [Fact]
    public async Task ServiceStartsInOidcModeFromTheEnvironmentFile()
    {
        await using var database = new TestDatabase();
        await database.CreateAsync();
        await using var provider = new OidcProvider([new OidcClient("deploy-runner", "deploy-secret", "tenant-deploy", ["runner"])]);
        await provider.StartAsync([OidcProvider.NewKey()]);
        var state = Directory.CreateTempSubdirectory("sbx-state-").FullName;
        var keyPath = Path.Combine(state, "checkpoint-signing-key.pem");
        DevelopmentKeys.Create(keyPath);
        var port = FreePort();

        var settings = OperatorSettings(database, provider, keyPath, port);
        var execStart = File.ReadAllLines(Path.Combine(Deploy, "systemd", "sandbox-audited.service")).Single(l => l.StartsWith("ExecStart=", StringComparison.Ordinal))["ExecStart=".Length..]
            .Replace(InstallDir, AppContext.BaseDirectory.TrimEnd('/')).Split(' ');
        var start = new ProcessStartInfo(execStart[0], execStart[1..]) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = AppContext.BaseDirectory };
        start.Environment.Clear();
        start.Environment["PATH"] = "/usr/bin:/bin";
        start.Environment["HOME"] = state;
        foreach (var (key, value) in settings)
            start.Environment[key] = value;
        using var service = Process.Start(start)!;
        var log = new StringBuilder();
        service.OutputDataReceived += (_, e) => { lock (log) log.AppendLine(e.Data); };
        service.ErrorDataReceived += (_, e) => { lock (log) log.AppendLine(e.Data); };
        service.BeginOutputReadLine();
        service.BeginErrorReadLine();
        try
        {
            using var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(10) };
            await Eventually.WaitUntilAsync(async () =>
            {
                Assert.False(service.HasExited, $"the service exited ({(service.HasExited ? service.ExitCode : 0)}):\n{Log()}");
                try
                {
                    return (await client.GetAsync("/readyz")).StatusCode == HttpStatusCode.OK;
                }
                catch (HttpRequestException)
                {
                    return false;
                }
            }, () => $"the service did not become ready:\n{Log()}", TimeSpan.FromSeconds(60), pollMs: 250);

            client.DefaultRequestHeaders.Authorization = new("Bearer", await provider.TokenAsync("deploy-runner", settings["Auth__Audience"]));
            var runtimes = await client.GetAsync("/v1/runtimes");
            Assert.True(runtimes.StatusCode == HttpStatusCode.OK, $"GET /v1/runtimes with a provider's token: {runtimes.StatusCode}\n{Log()}");
            Assert.Equal(HttpStatusCode.NotFound, (await client.PostAsync("/v1/dev/token", null)).StatusCode);
        }
        finally
        {
            service.Kill(entireProcessTree: true);
            await service.WaitForExitAsync();
            Directory.Delete(state, recursive: true);
        }

        string Log()
        {
            lock (log)
                return log.ToString();
        }
    }

    /// <summary>The example environment file with what an operator fills in for this host.</summary>
    internal static Dictionary<string, string> OperatorSettings(TestDatabase database, OidcProvider provider, string checkpointKeyPath, int port, string? repoRoot = null)
    {
        var root = repoRoot ?? TestEnvironment.RepoRoot;
        var settings = ReadEnvironmentFile(Path.Combine(Deploy, "sandbox-audited.env.example"));
        Assert.Equal("oidc", settings["Auth__Mode"]);
        settings["ASPNETCORE_URLS"] = $"http://127.0.0.1:{port}";
        settings["ConnectionStrings__Sandbox"] = database.AppConnection;
        settings["ConnectionStrings__Admin"] = database.AdminConnection;
        settings["Auth__Authority"] = provider.Issuer;
        settings["Auth__Issuer"] = provider.Issuer;
        settings["Auth__AllowHttpAuthority"] = "true";
        settings["Policies__Directory"] = Path.Combine(root, "policies");
        settings["Migrations__Directory"] = Path.Combine(root, "migrations");
        settings["Runtimes__Directory"] = Path.Combine(root, "runtimes");
        settings["Audit__CheckpointKeyPath"] = checkpointKeyPath;
        settings["Executor__NodeId"] = "deploy-" + Guid.NewGuid().ToString("N")[..8];
        settings["Executor__PoolSizePerLanguage"] = "0";
        return settings;
    }

    /// <summary>systemd's EnvironmentFile format as the example uses it: KEY=value lines, # comments.</summary>
    private static Dictionary<string, string> ReadEnvironmentFile(string path) =>
        File.ReadAllLines(path).Select(l => l.Trim()).Where(l => l.Length > 0 && l[0] != '#')
            .Select(l => l.Split('=', 2)).ToDictionary(p => p[0], p => p[1], StringComparer.Ordinal);

    internal static async Task<(int Exit, string Output)> RunAsync(string program, string[] arguments)
    {
        var start = new ProcessStartInfo(program, arguments) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync(new CancellationTokenSource(TimeSpan.FromSeconds(60)).Token);
        return (process.ExitCode, await stdout + await stderr);
    }

    internal static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
