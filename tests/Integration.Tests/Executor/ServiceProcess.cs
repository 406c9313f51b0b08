using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Executor;

/// <summary>
/// The real service as a child process (the build output of src/Api, copied next to the tests), on a free loopback
/// port, configured through environment variables the way an operator would. Used where the test must kill or
/// signal the process itself. Disposing always kills it.
/// </summary>
public sealed class ServiceProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _log = new();

    private ServiceProcess(Process process, Uri address)
    {
        _process = process;
        Address = address;
    }

    public Uri Address { get; }

    public int Pid => _process.Id;

    public bool HasExited => _process.HasExited;

    public int ExitCode => _process.ExitCode;

    public string Log
    {
        get
        {
            lock (_log)
                return _log.ToString();
        }
    }

    /// <summary>Settings a test's child service shares: its database, signing key, node id.</summary>
    public sealed record Setup(TestDatabase Database, string KeyPath, string NodeId)
    {
        public AuthOptions Auth => new() { Mode = "development", Issuer = "sandbox-audited-test", Audience = "sandbox-audited", DevelopmentKeyPath = KeyPath };

        public string Token(string subject, string tenant, params string[] roles) =>
            DevelopmentTokens.Mint(Auth, subject, tenant, roles, TimeSpan.FromMinutes(30));
    }

    /// <summary>
    /// Starts the service on the given loopback port (a restarted cluster node keeps its address), else on a free one, and
    /// waits until /healthz answers (60 s unless told: four start-ups at once on a busy machine take longer).
    /// </summary>
    public static async Task<ServiceProcess> StartAsync(Setup setup, IDictionary<string, string>? settings = null, int? port = null, TimeSpan? startTimeout = null)
    {
        var service = Launch(setup, settings, port ?? FreePort());
        try
        {
            await service.WaitUntilLiveAsync(startTimeout ?? TimeSpan.FromSeconds(60));
        }
        catch
        {
            await service.DisposeAsync(); // a start-up that timed out must not outlive the test
            throw;
        }
        return service;
    }

    /// <summary>Starts the service where it is expected to refuse to start: its exit code and output (null: still running after the timeout, killed).</summary>
    public static async Task<(int? ExitCode, string Log)> RunToExitAsync(Setup setup, IDictionary<string, string>? settings, TimeSpan timeout, int? port = null)
    {
        await using var service = Launch(setup, settings, port ?? FreePort());
        if (!await service.WaitForExitAsync(timeout))
            return (null, service.Log);
        service._process.WaitForExit(); // the end of both output streams
        return (service.ExitCode, service.Log);
    }

    private static ServiceProcess Launch(Setup setup, IDictionary<string, string>? settings, int port)
    {
        var directory = AppContext.BaseDirectory;
        var info = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = directory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(Path.Combine(directory, "Sandbox.Audited.Api.dll"));
        info.ArgumentList.Add("--urls");
        info.ArgumentList.Add($"http://127.0.0.1:{port}");
        var environment = new Dictionary<string, string>
        {
            ["ConnectionStrings__Sandbox"] = setup.Database.AppConnection,
            ["Auth__Mode"] = "development",
            ["Auth__Issuer"] = "sandbox-audited-test",
            ["Auth__Audience"] = "sandbox-audited",
            ["Auth__DevelopmentKeyPath"] = setup.KeyPath,
            ["Policies__Directory"] = Path.Combine(TestEnvironment.RepoRoot, "policies"),
            ["Runtimes__Directory"] = Path.Combine(TestEnvironment.RepoRoot, "runtimes"),
            ["Executor__NodeId"] = setup.NodeId,
            ["Executor__PoolSizePerLanguage"] = "1",
            ["Shutdown__GraceSeconds"] = "10",
        };
        foreach (var (key, value) in settings ?? new Dictionary<string, string>())
            environment[key] = value;
        foreach (var (key, value) in environment)
            info.Environment[key] = value;

        var process = Process.Start(info) ?? throw new InvalidOperationException("Could not start the service process.");
        var service = new ServiceProcess(process, new Uri($"http://127.0.0.1:{port}"));
        process.OutputDataReceived += (_, e) => service.Append(e.Data);
        process.ErrorDataReceived += (_, e) => service.Append(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return service;
    }

    public HttpClient Client(string token)
    {
        var client = new HttpClient { BaseAddress = Address, Timeout = TimeSpan.FromSeconds(60) };
        client.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);
        return client;
    }

    /// <summary>SIGKILL: the process gets no chance to clean up, as in a crash or an OOM kill of the service.</summary>
    public async Task CrashAsync()
    {
        _process.Kill(entireProcessTree: false);
        await _process.WaitForExitAsync();
    }

    /// <summary>SIGTERM: what an orchestrator sends to stop the service gracefully.</summary>
    public void Terminate()
    {
        using var kill = Process.Start("kill", ["-TERM", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        kill.WaitForExit();
    }

    public async Task<bool> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
    }

    private async Task WaitUntilLiveAsync(TimeSpan timeout)
    {
        using var client = new HttpClient { BaseAddress = Address, Timeout = TimeSpan.FromSeconds(2) };
        var deadline = DateTime.UtcNow + timeout;
        var last = "no answer";
        while (DateTime.UtcNow < deadline)
        {
            if (_process.HasExited)
                throw new InvalidOperationException($"The service exited with {_process.ExitCode} during start-up:\n{Log}");
            try
            {
                var response = await client.GetAsync("/healthz");
                if (response.StatusCode == HttpStatusCode.OK)
                    return;
                last = $"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}";
            }
            catch (HttpRequestException e)
            {
                last = e.Message;
            }
            catch (TaskCanceledException)
            {
                last = "no answer within 2 s";
            }
            await Task.Delay(200);
        }
        throw new TimeoutException($"The service did not answer /healthz at {Address} within {timeout.TotalSeconds:F0} s (last: {last}):\n{Log}");
    }

    private void Append(string? line)
    {
        if (line is null)
            return;
        lock (_log)
            _log.AppendLine(line);
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
