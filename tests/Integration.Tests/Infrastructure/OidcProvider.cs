using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.IdentityModel.Tokens;

namespace Sandbox.Audited.Tests.Infrastructure;

/// <summary>A client of the test provider: the client-credentials grant gives it tokens with this tenant and these roles.</summary>
public sealed record OidcClient(string ClientId, string Secret, string? Tenant, string[] Roles, int TtlSeconds = 300);

/// <summary>
/// A real, third-party OpenID Connect provider (npm `oidc-provider`, tests/oidc-provider) run with Node.js on a
/// loopback port. The test owns the signing keys (RSA, first key signs), so it can rotate them and build attack
/// tokens honestly. Stopped by its pid.
/// </summary>
public sealed class OidcProvider : IAsyncDisposable
{
    private static readonly SemaphoreSlim InstallGate = new(1, 1);
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "sbx-oidc-" + Guid.NewGuid().ToString("N")[..8]);
    private readonly IReadOnlyList<OidcClient> _clients;
    private Process? _process;

    public OidcProvider(IReadOnlyList<OidcClient> clients, int? port = null)
    {
        _clients = clients;
        Port = port ?? FreePort();
    }

    public int Port { get; }

    public string Issuer => $"http://127.0.0.1:{Port}";

    /// <summary>The keys served in the JWKS; the first signs.</summary>
    public IReadOnlyList<(string Kid, RSA Key)> Keys { get; private set; } = [];

    public static string Directory => Path.Combine(TestEnvironment.RepoRoot, "tests", "oidc-provider");

    public async Task StartAsync(IReadOnlyList<(string Kid, RSA Key)> keys)
    {
        await EnsureInstalledAsync();
        System.IO.Directory.CreateDirectory(_dir);
        Keys = keys;
        var keysFile = Path.Combine(_dir, "keys.json");
        var clientsFile = Path.Combine(_dir, "clients.json");
        await File.WriteAllTextAsync(keysFile, new JsonObject { ["keys"] = new JsonArray(keys.Select(k => (JsonNode)PrivateJwk(k.Kid, k.Key)).ToArray()) }.ToJsonString());
        await File.WriteAllTextAsync(clientsFile, JsonSerializer.Serialize(_clients.Select(c => new
        {
            client_id = c.ClientId, client_secret = c.Secret, tenant = c.Tenant, roles = c.Roles, ttl = c.TtlSeconds,
        })));

        var start = new ProcessStartInfo("node", [Path.Combine(Directory, "provider.js"), Port.ToString(), keysFile, clientsFile])
        {
            WorkingDirectory = Directory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        _process = Process.Start(start) ?? throw new InvalidOperationException("node did not start");
        _process.OutputDataReceived += (_, _) => { };
        _process.ErrorDataReceived += (_, _) => { };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();

        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            if (_process.HasExited)
                throw new InvalidOperationException($"The OIDC provider exited with {_process.ExitCode}.");
            try
            {
                var response = await http.GetAsync($"{Issuer}/.well-known/openid-configuration");
                if (response.IsSuccessStatusCode)
                    return;
            }
            catch (HttpRequestException)
            {
            }
            catch (TaskCanceledException)
            {
            }
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException("The OIDC provider did not serve discovery within 30 s.");
            await Task.Delay(100);
        }
    }

    public async Task StopAsync()
    {
        if (_process is null)
            return;
        if (!_process.HasExited)
        {
            _process.Kill();
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
        _process = null;
    }

    /// <summary>A client-credentials token from the provider (for another resource when asked: a wrong audience).</summary>
    public async Task<string> TokenAsync(string clientId, string? resource = null, string? scope = null)
    {
        var client = _clients.Single(c => c.ClientId == clientId);
        var form = new Dictionary<string, string>
        {
            ["grant_type"] = "client_credentials", ["client_id"] = client.ClientId, ["client_secret"] = client.Secret,
        };
        if (resource is not null)
            form["resource"] = resource;
        if (scope is not null)
            form["scope"] = scope;
        using var http = new HttpClient();
        var response = await http.PostAsync($"{Issuer}/token", new FormUrlEncodedContent(form));
        var body = await response.Content.ReadAsStringAsync();
        if (!response.IsSuccessStatusCode)
            throw new InvalidOperationException($"The provider refused the token request: {(int)response.StatusCode} {body}");
        return JsonNode.Parse(body)!["access_token"]!.GetValue<string>();
    }

    /// <summary>The JWKS exactly as the provider serves it.</summary>
    public async Task<JsonNode> JwksAsync()
    {
        using var http = new HttpClient();
        var discovery = JsonNode.Parse(await http.GetStringAsync($"{Issuer}/.well-known/openid-configuration"))!;
        return JsonNode.Parse(await http.GetStringAsync(discovery["jwks_uri"]!.GetValue<string>()))!;
    }

    public static (string Kid, RSA Key) NewKey() => ("key-" + Guid.NewGuid().ToString("N")[..8], RSA.Create(2048));

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        if (System.IO.Directory.Exists(_dir))
            System.IO.Directory.Delete(_dir, recursive: true);
    }

    private static JsonObject PrivateJwk(string kid, RSA key)
    {
        var p = key.ExportParameters(includePrivateParameters: true);
        return new JsonObject
        {
            ["kty"] = "RSA", ["kid"] = kid, ["alg"] = "RS256", ["use"] = "sig",
            ["n"] = Base64UrlEncoder.Encode(p.Modulus), ["e"] = Base64UrlEncoder.Encode(p.Exponent),
            ["d"] = Base64UrlEncoder.Encode(p.D), ["p"] = Base64UrlEncoder.Encode(p.P), ["q"] = Base64UrlEncoder.Encode(p.Q),
            ["dp"] = Base64UrlEncoder.Encode(p.DP), ["dq"] = Base64UrlEncoder.Encode(p.DQ), ["qi"] = Base64UrlEncoder.Encode(p.InverseQ),
        };
    }

    // `npm ci` once when node_modules is missing (a fresh clone); `./sbx test` may have done it already.
    private static async Task EnsureInstalledAsync()
    {
        await InstallGate.WaitAsync();
        try
        {
            if (System.IO.Directory.Exists(Path.Combine(Directory, "node_modules", "oidc-provider")))
                return;
            using var npm = Process.Start(new ProcessStartInfo("npm", ["ci", "--no-audit", "--no-fund"]) { WorkingDirectory = Directory, UseShellExecute = false })
                ?? throw new InvalidOperationException("npm did not start");
            await npm.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(5));
            if (npm.ExitCode != 0)
                throw new InvalidOperationException($"`npm ci` in {Directory} failed with {npm.ExitCode}.");
        }
        finally
        {
            InstallGate.Release();
        }
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
