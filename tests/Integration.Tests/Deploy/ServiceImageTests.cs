using System.Net;
using System.Net.Http.Json;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Deploy;

/// <summary>
/// The service's own image (deploy/image/build-service-image.sh, built by `./sbx test` as SBX_SERVICE_IMAGE) runs next
/// to PostgreSQL and the Docker engine with host networking, from the example environment file, and runs code.
/// </summary>
public sealed class ServiceImageTests
{
    private static string Image => Environment.GetEnvironmentVariable("SBX_SERVICE_IMAGE") ?? "sandbox-audited:test";

    [Fact]
    public async Task ImageServesInOidcModeWithHostNetworkingAndRunsCode()
    {
        var (found, _) = await SystemdUnitTests.RunAsync("docker", ["image", "inspect", Image]);
        Assert.True(found == 0, $"image {Image} is missing: deploy/image/build-service-image.sh {Image} (./sbx test builds it).");
        await using var database = new TestDatabase();
        await database.CreateAsync();
        await using var provider = new OidcProvider([new OidcClient("image-runner", "image-secret", "tenant-image", ["runner"])]);
        await provider.StartAsync([OidcProvider.NewKey()]);
        var keys = Directory.CreateTempSubdirectory("sbx-image-keys-").FullName;
        DevelopmentKeys.Create(Path.Combine(keys, "checkpoint.pem"));
        // The container's user (10001) reads the key; a throw-away test key only.
        await SystemdUnitTests.RunAsync("chmod", ["-R", "a+rX", keys]);
        var port = SystemdUnitTests.FreePort();
        var settings = SystemdUnitTests.OperatorSettings(database, provider, "/keys/checkpoint.pem", port, repoRoot: "/opt/sandbox-audited");
        var envFile = Path.Combine(keys, "env");
        await File.WriteAllLinesAsync(envFile, settings.Select(s => $"{s.Key}={s.Value}"));
        // The container's user reaches the engine through the socket's group, as the systemd unit's user does.
        var socketGroup = (await SystemdUnitTests.RunAsync("stat", ["-c", "%g", "/var/run/docker.sock"])).Output.Trim();
        var name = "sbx-image-test-" + Guid.NewGuid().ToString("N")[..8];

        var (started, startOutput) = await SystemdUnitTests.RunAsync("docker", ["run", "-d", "--rm", "--name", name, "--network", "host",
            "--env-file", envFile, "-v", "/var/run/docker.sock:/var/run/docker.sock", "--group-add", socketGroup, "-v", $"{keys}:/keys:ro", Image]);
        Assert.True(started == 0, $"docker run: {startOutput}");
        try
        {
            using var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(30) };
            await Eventually.WaitUntilAsync(async () =>
            {
                try
                {
                    return (await client.GetAsync("/readyz")).StatusCode == HttpStatusCode.OK;
                }
                catch (HttpRequestException)
                {
                    return false;
                }
            }, () => $"the container did not become ready:\n{Logs(name)}", TimeSpan.FromSeconds(90), pollMs: 500);

            client.DefaultRequestHeaders.Authorization = new("Bearer", await provider.TokenAsync("image-runner", settings["Auth__Audience"]));
            var run = await client.PostAsJsonAsync("/v1/runs", new { language = "python", code = "print(6 * 7)" });
            var body = await ApiCalls.BodyAsync(run);
            Assert.True(run.StatusCode == HttpStatusCode.OK, $"POST /v1/runs: {run.StatusCode} {body}\n{Logs(name)}");
            Assert.Equal("succeeded", body.Str("status"));
            Assert.Equal("42\n", body.Str("stdout.content"));
        }
        finally
        {
            await SystemdUnitTests.RunAsync("docker", ["rm", "-f", name]);
            Directory.Delete(keys, recursive: true);
        }
    }

    private static string Logs(string name) => SystemdUnitTests.RunAsync("docker", ["logs", "--tail", "40", name]).GetAwaiter().GetResult().Output;
}
