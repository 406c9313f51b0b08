using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Sandbox.Audited.Api.Callbacks;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Api;

/// <summary>callbackUrl: the finished run is POSTed, signed with the tenant's secret, retried, every attempt recorded.</summary>
[Collection(ApiCollection.Name)]
public sealed class CallbackTests(ApiFixture service)
{
    [Fact]
    public async Task FinishedRunIsPostedSignedAndRetriedUntilAccepted()
    {
        await using var receiver = new Receiver(answers: [500, 200]);
        var client = service.Runner("carl", ApiFixture.CallbackTenant);

        var (response, body) = await client.RunAsync(new { language = "shell", code = "echo called", wait = false, callbackUrl = receiver.Url });
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var runId = body.Str("runId");

        var deliveries = await receiver.WaitForAsync(2);
        foreach (var delivery in deliveries)
        {
            Assert.Equal(CallbackSender.Sign(ApiFixture.CallbackSecret, delivery.Timestamp, delivery.Body), delivery.Signature);
            Assert.InRange(long.Parse(delivery.Timestamp), DateTimeOffset.UtcNow.AddMinutes(-1).ToUnixTimeSeconds(), DateTimeOffset.UtcNow.ToUnixTimeSeconds());
            var run = JsonNode.Parse(delivery.Body)!;
            Assert.Equal(runId, run.Str("runId"));
            Assert.Equal("succeeded", run.Str("status"));
            Assert.Equal("called\n", run.Str("stdout.content"));
        }

        var attempts = await WaitForAttemptsAsync(runId, 2);
        Assert.Equal([("1", "500", "false"), ("2", "200", "true")], attempts);
        // Attempts are recorded after the run's terminal event.
        Assert.True(await service.Database.ScalarAsync<bool>(
            "SELECT min(version) FILTER (WHERE type = 'callback_attempted') > max(version) FILTER (WHERE type = 'run_completed') FROM sandbox.mt_events WHERE stream_id = $1::uuid", runId));
    }

    [Fact]
    public async Task CallbackIsGivenUpAfterThreeFailedAttempts()
    {
        await using var receiver = new Receiver(answers: [503, 503, 503, 200]);
        var client = service.Runner("cora", ApiFixture.CallbackTenant);

        var (_, body) = await client.RunAsync(new { language = "shell", code = "true", callbackUrl = receiver.Url });

        var attempts = await WaitForAttemptsAsync(body.Str("runId"), 3);
        Assert.Equal([("1", "503", "false"), ("2", "503", "false"), ("3", "503", "false")], attempts);
        await Task.Delay(500);
        Assert.Equal(3, receiver.Count);
    }

    [Theory]
    [InlineData("http://10.1.2.3/hook")]
    [InlineData("ftp://127.0.0.1/hook")]
    [InlineData("not a url")]
    public async Task CallbackToAHostOutsideTheAllowListIsRefusedWith400(string url)
    {
        var (response, body) = await service.Runner("cole", ApiFixture.CallbackTenant).RunAsync(new { language = "shell", code = "echo no", callbackUrl = url });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("/problems/invalid-request", body.Str("type"));
        Assert.Contains("callbackUrl", body.Str("detail"));
    }

    [Fact]
    public async Task CallbackForATenantWithoutASecretIsRefusedWith400()
    {
        var (response, body) = await service.Runner("cyd", "tenant-without-secret").RunAsync(new { language = "shell", code = "echo no", callbackUrl = "http://127.0.0.1:9/hook" });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("secret", body.Str("detail"));
    }

    private async Task<List<(string, string, string)>> WaitForAttemptsAsync(string runId, int count)
    {
        await Eventually.WaitUntilAsync(async () => await service.Database.ScalarAsync<long>(
                "SELECT count(*) FROM sandbox.mt_events WHERE stream_id = $1::uuid AND type = 'callback_attempted'", runId) >= count,
            () => $"{count} callback attempts were not recorded within 30 s", TimeSpan.FromSeconds(30));
        var rows = await service.Database.ScalarAsync<string>(
            "SELECT string_agg((data ->> 'attempt') || ',' || coalesce(data ->> 'statusCode', '') || ',' || (data ->> 'delivered'), ';' ORDER BY version) FROM sandbox.mt_events WHERE stream_id = $1::uuid AND type = 'callback_attempted'", runId);
        return rows!.Split(';').Select(r => r.Split(',')).Select(p => (p[0], p[1], p[2])).ToList();
    }

    private sealed record Delivery(string Signature, string Timestamp, byte[] Body);

    /// <summary>A tiny HTTP receiver on a loopback port that answers with the given status codes in turn.</summary>
    private sealed class Receiver : IAsyncDisposable
    {
        private readonly HttpListener _listener = new();
        private readonly ConcurrentQueue<Delivery> _deliveries = new();
        private readonly Task _loop;

        public Receiver(int[] answers)
        {
            var port = FreePort();
            Url = $"http://127.0.0.1:{port}/hook/";
            _listener.Prefixes.Add(Url);
            _listener.Start();
            _loop = Task.Run(async () =>
            {
                foreach (var status in answers)
                {
                    var context = await _listener.GetContextAsync();
                    using var buffer = new MemoryStream();
                    await context.Request.InputStream.CopyToAsync(buffer);
                    _deliveries.Enqueue(new Delivery(context.Request.Headers["X-Sandbox-Signature"] ?? "", context.Request.Headers["X-Sandbox-Timestamp"] ?? "", buffer.ToArray()));
                    context.Response.StatusCode = status;
                    context.Response.Close();
                }
            });
        }

        public string Url { get; }

        public int Count => _deliveries.Count;

        public async Task<List<Delivery>> WaitForAsync(int count)
        {
            await Eventually.WaitUntilAsync(() => Task.FromResult(_deliveries.Count >= count),
                () => $"{count} callbacks did not arrive within 30 s", TimeSpan.FromSeconds(30), pollMs: 50);
            return _deliveries.ToList();
        }

        public async ValueTask DisposeAsync()
        {
            _listener.Stop();
            _listener.Close();
            try
            {
                await _loop;
            }
            catch (Exception e) when (e is HttpListenerException or ObjectDisposedException)
            {
            }
        }

        private static int FreePort()
        {
            using var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            return ((IPEndPoint)listener.LocalEndpoint).Port;
        }
    }

}
