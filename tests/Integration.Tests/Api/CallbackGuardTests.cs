using System.Net;
using System.Net.Sockets;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Api;

/// <summary>Callbacks as deployed by default: loopback and internal addresses refused; one allowed name that resolves to loopback.</summary>
public sealed class CallbackGuardFixture : ServiceFixture
{
    public const string Tenant = "tenant-callback-guard";

    /// <summary>This machine's own name: allowed by name, but it resolves to an internal address (as a rebound name would).</summary>
    public static readonly string RebindingName = Dns.GetHostName();

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        [$"Callbacks:Secrets:{Tenant}"] = "guard-secret",
        ["Callbacks:AllowedHosts:0"] = RebindingName,
        ["Callbacks:MaxAttempts"] = "1",
        ["Executor:PoolSizePerLanguage"] = "0",
    };
}

[CollectionDefinition(Name)]
public sealed class CallbackGuardCollection : ICollectionFixture<CallbackGuardFixture>
{
    public const string Name = "callback-guard";
}

[Collection(CallbackGuardCollection.Name)]
public sealed class CallbackGuardTests(CallbackGuardFixture service)
{
    [Theory]
    [InlineData("http://127.0.0.1:{port}/hook")]
    [InlineData("http://localhost:{port}/hook")]
    [InlineData("http://[::1]:{port}/hook")]
    [InlineData("http://169.254.169.254/latest/meta-data/")]
    [InlineData("http://192.168.1.1/")]
    [InlineData("http://[::ffff:127.0.0.1]:{port}/")]
    public async Task ACallbackToAnInternalAddressIsRefusedUnlessAllowed(string url)
    {
        using var listener = Listen(out var port);

        var (response, body) = await service.Runner("gil", CallbackGuardFixture.Tenant)
            .RunAsync(new { language = "shell", code = "echo no", callbackUrl = url.Replace("{port}", port.ToString()) });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("callbackUrl", body.Str("detail"));
    }

    [Fact]
    public async Task AnAllowedNameThatResolvesToAnInternalAddressIsNotConnectedAndPortsLookAlike()
    {
        using var listener = Listen(out var openPort);
        int closedPort;
        using (Listen(out closedPort)) { }

        var open = await RunWithCallbackAsync($"http://{CallbackGuardFixture.RebindingName}:{openPort}/hook");
        var closed = await RunWithCallbackAsync($"http://{CallbackGuardFixture.RebindingName}:{closedPort}/hook");

        Assert.False(listener.Pending(), "the service connected to an internal address");
        Assert.Equal("the receiver could not be reached", open);
        Assert.Equal(open, closed); // the record does not tell an open internal port from a closed one
    }

    private async Task<string> RunWithCallbackAsync(string url)
    {
        var (response, body) = await service.Runner("gil", CallbackGuardFixture.Tenant).RunAsync(new { language = "shell", code = "true", callbackUrl = url });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var runId = body.Str("runId");
        await Eventually.WaitUntilAsync(async () => await service.Database.ScalarAsync<long>(
                "SELECT count(*) FROM sandbox.mt_events WHERE stream_id = $1::uuid AND type = 'callback_attempted'", runId) >= 1,
            () => "the callback attempt was not recorded within 30 s", TimeSpan.FromSeconds(30));
        return (await service.Database.ScalarAsync<string>(
            "SELECT data ->> 'error' FROM sandbox.mt_events WHERE stream_id = $1::uuid AND type = 'callback_attempted'", runId))!;
    }

    private static TcpListener Listen(out int port)
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        port = ((IPEndPoint)listener.LocalEndpoint).Port;
        return listener;
    }
}
