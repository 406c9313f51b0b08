using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Sandbox.Audited.Api.Callbacks;
using Sandbox.Audited.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Sandbox.Audited.Tests.Api;

/// <summary>One api node of a test cluster: its own node id, the first node's database and keys when it has one.</summary>
public sealed class ClusterNode : ServiceFixture
{
    public const string Tenant = "tenant-outbox";
    public const string Secret = "outbox-secret";

    private readonly IDictionary<string, string?> _settings;

    public ClusterNode(IDictionary<string, string?> settings) => _settings = With(settings);

    public ClusterNode(ClusterNode first, IDictionary<string, string?> settings) : base(first) => _settings = With(settings);

    protected override IDictionary<string, string?> Settings => _settings;

    private static Dictionary<string, string?> With(IDictionary<string, string?> settings)
    {
        var all = new Dictionary<string, string?>
        {
            [$"Callbacks:Secrets:{Tenant}"] = Secret,
            ["Callbacks:AllowLoopback"] = "true", // the tests' receiver listens on loopback
            ["Callbacks:PollMilliseconds"] = "50",
        };
        foreach (var (key, value) in settings)
            all[key] = value;
        return all;
    }

    public static async Task<ClusterNode> StartAsync(IDictionary<string, string?> settings, ClusterNode? first = null)
    {
        var node = first is null ? new ClusterNode(settings) : new ClusterNode(first, settings);
        await node.InitializeAsync();
        return node;
    }
}

/// <summary>
/// The callback outbox across api nodes: a callback still pending when its node stops is delivered by the next node that
/// starts, and two nodes' workers never deliver one callback twice or at once.
/// </summary>
public sealed class CallbackOutboxTests(ITestOutputHelper output)
{
    [Fact]
    public async Task APendingCallbackIsDeliveredByAFreshlyStartedHost()
    {
        var port = Receiver.FreePort();
        var url = $"http://127.0.0.1:{port}/hook/";
        // The receiver is down for the first attempt; the next one is 3 s later, by then this node has stopped.
        var settings = new Dictionary<string, string?> { ["Callbacks:MaxAttempts"] = "5", ["Callbacks:InitialBackoffMs"] = "3000" };
        var first = await ClusterNode.StartAsync(settings);
        ClusterNode? second = null;
        try
        {
            var (response, body) = await first.Runner("olga", ClusterNode.Tenant).RunAsync(new { language = "shell", code = "echo durable", callbackUrl = url });
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var runId = body.Str("runId");
            await Eventually.WaitUntilAsync(async () => await first.Database.ScalarAsync<int>(
                    "SELECT attempts FROM sandbox.callback_outbox WHERE run_id = $1::uuid", runId) == 1,
                () => "the first attempt was not made", TimeSpan.FromSeconds(30));

            await first.StopServiceAsync();
            // Stopping gave the row back: no lease, still to deliver, one failed attempt on record.
            Assert.True(await first.Database.ScalarAsync<bool>(
                "SELECT claimed_by IS NULL AND claim_expires_at IS NULL AND delivered_at IS NULL AND given_up_at IS NULL FROM sandbox.callback_outbox WHERE run_id = $1::uuid", runId));

            await using var receiver = new Receiver(port);
            second = await ClusterNode.StartAsync(settings, first);

            var delivery = Assert.Single(await receiver.WaitForAsync(1));
            Assert.Equal(CallbackSender.Sign(ClusterNode.Secret, delivery.Timestamp, delivery.Body), delivery.Signature);
            Assert.Equal("2", delivery.Attempt);
            var run = JsonNode.Parse(delivery.Body)!;
            Assert.Equal(runId, run.Str("runId"));
            Assert.Equal("succeeded", run.Str("status"));
            Assert.Equal("durable\n", run.Str("stdout.content"));

            await Eventually.WaitUntilAsync(async () => await first.Database.ScalarAsync<bool>(
                    "SELECT delivered_at IS NOT NULL FROM sandbox.callback_outbox WHERE run_id = $1::uuid", runId),
                () => "the delivery was not recorded in the outbox", TimeSpan.FromSeconds(10));
            Assert.StartsWith(second.NodeId + "/", await first.Database.ScalarAsync<string>("SELECT claimed_by FROM sandbox.callback_outbox WHERE run_id = $1::uuid", runId));
            Assert.Equal("1,,false;2,200,true", await first.Database.ScalarAsync<string>(
                "SELECT string_agg((data ->> 'attempt') || ',' || coalesce(data ->> 'statusCode', '') || ',' || (data ->> 'delivered'), ';' ORDER BY version) FROM sandbox.mt_events WHERE stream_id = $1::uuid AND type = 'callback_attempted'", runId));
        }
        finally
        {
            if (second is not null)
                await second.DisposeAsync();
            await first.DisposeAsync();
        }
    }

    [Fact]
    public async Task TwoNodesNeverDeliverOneCallbackTwiceOrAtOnce()
    {
        // A slow receiver widens the window in which a second worker could take a callback already being delivered.
        await using var receiver = new Receiver(Receiver.FreePort(), delay: TimeSpan.FromMilliseconds(300));
        var settings = new Dictionary<string, string?> { ["RateLimit:BurstLimit"] = "100" };
        var first = await ClusterNode.StartAsync(settings);
        var second = await ClusterNode.StartAsync(settings, first);
        try
        {
            await DeliverEachOnceAsync(first, second, receiver);
        }
        finally
        {
            await second.DisposeAsync();
            await first.DisposeAsync();
        }
    }

    private async Task DeliverEachOnceAsync(ClusterNode first, ClusterNode second, Receiver receiver)
    {
        const int runs = 8;

        var requests = Enumerable.Range(0, runs).Select(async i =>
        {
            var node = i % 2 == 0 ? first : second;
            var (response, body) = await node.Runner("otto", ClusterNode.Tenant).RunAsync(new { language = "shell", code = $"echo {i}", wait = false, callbackUrl = receiver.Url });
            Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
            return body.Str("runId");
        });
        var runIds = await Task.WhenAll(requests);

        await receiver.WaitForAsync(runs);
        await Eventually.WaitUntilAsync(async () => await first.Database.ScalarAsync<long>(
                "SELECT count(*) FROM sandbox.callback_outbox WHERE delivered_at IS NOT NULL") == runs,
            () => "not every callback was marked delivered", TimeSpan.FromSeconds(30));
        await Task.Delay(1000); // a duplicate would arrive within this time

        Assert.Equal(runIds.Order(), receiver.Deliveries.Select(d => d.RunId).Order());
        Assert.Equal(1, receiver.MostAtOnceForOneRun);
        Assert.Equal(runs, await first.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events WHERE type = 'callback_attempted'"));
        var byWorker = await first.Database.ScalarAsync<string>(
            "SELECT string_agg(split_part(claimed_by, '/', 1) || '=' || n, ' ') FROM (SELECT claimed_by, count(*) n FROM sandbox.callback_outbox GROUP BY 1) w");
        output.WriteLine($"delivered by: {byWorker}");
    }

    internal sealed record Delivery(string RunId, string Attempt, string Signature, string Timestamp, byte[] Body);

    /// <summary>A loopback HTTP receiver that accepts every callback, optionally slowly, and counts overlapping deliveries per run.</summary>
    internal sealed class Receiver : IAsyncDisposable
    {
        private readonly HttpListener _listener = new();
        private readonly ConcurrentQueue<Delivery> _deliveries = new();
        private readonly ConcurrentDictionary<string, int> _open = new();
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _loop;
        private int _mostAtOnce;

        public Receiver(int port, TimeSpan delay = default)
        {
            Url = $"http://127.0.0.1:{port}/hook/";
            _listener.Prefixes.Add(Url);
            _listener.Start();
            _loop = Task.Run(async () =>
            {
                var handlers = new List<Task>();
                while (!_stop.IsCancellationRequested)
                {
                    var context = await _listener.GetContextAsync();
                    handlers.Add(Task.Run(async () =>
                    {
                        var runId = context.Request.Headers["X-Sandbox-Run-Id"] ?? "";
                        var open = _open.AddOrUpdate(runId, 1, (_, n) => n + 1);
                        InterlockedMax(ref _mostAtOnce, open);
                        using var buffer = new MemoryStream();
                        await context.Request.InputStream.CopyToAsync(buffer);
                        await Task.Delay(delay);
                        _deliveries.Enqueue(new Delivery(runId, context.Request.Headers["X-Sandbox-Attempt"] ?? "",
                            context.Request.Headers["X-Sandbox-Signature"] ?? "", context.Request.Headers["X-Sandbox-Timestamp"] ?? "", buffer.ToArray()));
                        _open.AddOrUpdate(runId, 0, (_, n) => n - 1);
                        context.Response.StatusCode = 200;
                        context.Response.Close();
                    }));
                }
            });
        }

        public string Url { get; }

        public IReadOnlyList<Delivery> Deliveries => _deliveries.ToList();

        public int MostAtOnceForOneRun => Volatile.Read(ref _mostAtOnce);

        public async Task<List<Delivery>> WaitForAsync(int count)
        {
            await Eventually.WaitUntilAsync(() => Task.FromResult(_deliveries.Count >= count),
                () => $"{count} callbacks did not arrive within 60 s (got {_deliveries.Count})", TimeSpan.FromSeconds(60), pollMs: 50);
            return _deliveries.ToList();
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
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

        private static void InterlockedMax(ref int target, int value)
        {
            for (var seen = Volatile.Read(ref target); value > seen; seen = Volatile.Read(ref target))
                if (Interlocked.CompareExchange(ref target, value, seen) == seen)
                    return;
        }

        public static int FreePort()
        {
            using var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            return ((IPEndPoint)listener.LocalEndpoint).Port;
        }
    }
}
