using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using Sandbox.Audited.Api.Nodes;
using Sandbox.Audited.Api.Streaming;
using Sandbox.Audited.Executor.Sandboxes;

namespace Sandbox.Audited.Tests.Cluster;

/// <summary>Live output relayed from the executor node to the api node through PostgreSQL NOTIFY, on the cluster's two in-process nodes.</summary>
[Collection(ClusterCollection.Name)]
public sealed class FeedRelayTests(ClusterFixture cluster)
{
    [Fact]
    public async Task ManySmallChunksCrossNodesInAboutOneNotificationPerWindowAndArriveWholeAndInPlace()
    {
        var runId = Guid.CreateVersion7();
        var feed = cluster.ApiServices.GetRequiredService<RunFeed>();
        using var subscription = feed.Follow(runId, 0);
        await using var listener = new NpgsqlConnection(cluster.Database.AppConnection);
        await listener.OpenAsync();
        var notifications = new ConcurrentQueue<string>();
        listener.Notification += (_, e) =>
        {
            if (e.Payload.Contains(runId.ToString("D"), StringComparison.Ordinal))
                notifications.Enqueue(e.Payload);
        };
        await using (var listen = new NpgsqlCommand($"LISTEN {FeedRelay.Channel}", listener))
            await listen.ExecuteNonQueryAsync();
        var relay = cluster.ExecutorServices.GetRequiredService<FeedRelay>();

        // 400 small writes on stdout in 20 bursts, 5 ms apart, and a few on stderr: one notification per write before.
        var expected = new[] { new List<byte>(), new List<byte>() };
        var writes = 0;
        var watch = Stopwatch.StartNew();
        for (var burst = 0; burst < 20; burst++)
        {
            for (var i = 0; i < 20; i++)
            {
                var stream = i == 19 ? OutputStream.Stderr : OutputStream.Stdout;
                var bytes = Encoding.UTF8.GetBytes($"burst {burst} line {i}\n");
                var sofar = expected[(int)stream];
                relay.Output(runId, new OutputChunk(stream, bytes), sofar.Count);
                sofar.AddRange(bytes);
                writes++;
            }
            await Task.Delay(5);
        }
        var writing = watch.Elapsed;

        var received = new[] { new SortedDictionary<long, byte[]>(), new SortedDictionary<long, byte[]>() };
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        while (received[0].Values.Sum(b => b.Length) < expected[0].Count || received[1].Values.Sum(b => b.Length) < expected[1].Count)
        {
            var item = await subscription.Live.ReadAsync(timeout.Token);
            if (item is OutputItem output)
                received[(int)output.Stream][output.Offset] = output.Bytes;
        }
        await listener.WaitAsync(TimeSpan.FromMilliseconds(200)); // the listener's own copy of the last notification

        for (var stream = 0; stream < 2; stream++)
            Assert.Equal(Encoding.UTF8.GetString([.. expected[stream]]), Encoding.UTF8.GetString([.. received[stream].Values.SelectMany(b => b)]));
        // Batches are at least one window apart, so the writing time bounds their number (plus the last one after it).
        var windows = (int)Math.Ceiling(writing / FeedRelay.Window) + 1;
        Assert.True(notifications.Count <= windows, $"{notifications.Count} notifications for {writes} writes in {writing.TotalMilliseconds:F0} ms (at most {windows} windows)");
        Assert.True(notifications.Count < writes / 4, $"{notifications.Count} notifications for {writes} writes");
        Assert.All(notifications, n => Assert.True(Encoding.UTF8.GetByteCount(n) < 8000, $"payload of {n.Length} characters"));
    }

    [Fact]
    public async Task ANotificationWithoutTheNodesMacIsDroppedAndTheExecutorsOwnIsDelivered()
    {
        var runId = Guid.CreateVersion7();
        var feed = cluster.ApiServices.GetRequiredService<RunFeed>();
        var receiver = cluster.ApiServices.GetRequiredService<FeedRelay>();
        using var subscription = feed.Follow(runId, 0);
        var rejectedBefore = receiver.Rejected;
        var forged = $$"""[{"r":"{{runId}}","n":"exec-forger","k":"o","s":0,"o":0,"b":"{{Convert.ToBase64String(Encoding.UTF8.GetBytes("forged\n"))}}"}]""";

        // The auditor's login, unsigned; the service's own login with a MAC under a key it guessed; a MAC cut short.
        await NotifyAsync(cluster.Database.AuditorConnection, forged);
        await NotifyAsync(cluster.Database.AppConnection, FeedRelay.Sign(new byte[32], forged));
        await NotifyAsync(cluster.Database.AppConnection, FeedRelay.Sign(new byte[32], forged)[..20] + "." + forged);
        // Then the executor's relay: notifications are delivered in the order their transactions committed.
        cluster.ExecutorServices.GetRequiredService<FeedRelay>().Output(runId, new OutputChunk(OutputStream.Stdout, Encoding.UTF8.GetBytes("genuine\n")), 0);

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        var first = await subscription.Live.ReadAsync(timeout.Token);
        Assert.Equal("genuine\n", Encoding.UTF8.GetString(Assert.IsType<OutputItem>(first).Bytes));
        Assert.Equal(rejectedBefore + 3, receiver.Rejected);
    }

    [Fact]
    public async Task TheRelayKeyIsReadableByTheServicesLoginOnlyAndAMacBindsItsPayload()
    {
        await using (var auditor = new NpgsqlConnection(cluster.Database.AuditorConnection))
        {
            await auditor.OpenAsync();
            await using var read = new NpgsqlCommand("SELECT key FROM sandbox.relay_key", auditor);
            var denied = await Assert.ThrowsAsync<PostgresException>(() => read.ExecuteScalarAsync());
            Assert.Equal(PostgresErrorCodes.InsufficientPrivilege, denied.SqlState);
        }
        var secret = await cluster.Database.ScalarAsync<string>("SELECT key FROM sandbox.relay_key");
        Assert.Equal(96, secret!.Length);

        var key = FeedRelay.KeyFrom(secret);
        var payload = FeedRelay.Sign(key, "[{\"k\":\"u\"}]");
        Assert.Equal("[{\"k\":\"u\"}]", FeedRelay.Verified(key, payload));
        Assert.Null(FeedRelay.Verified(key, payload.Replace("\"u\"", "\"o\"", StringComparison.Ordinal)));
        Assert.Null(FeedRelay.Verified(FeedRelay.KeyFrom(secret + "x"), payload));
        Assert.Null(FeedRelay.Verified(key, "[{\"k\":\"u\"}]"));
    }

    private static async Task NotifyAsync(string connection, string payload)
    {
        await using var db = new NpgsqlConnection(connection);
        await db.OpenAsync();
        await using var notify = new NpgsqlCommand("SELECT pg_notify($1, $2)", db);
        notify.Parameters.AddWithValue(FeedRelay.Channel);
        notify.Parameters.AddWithValue(payload);
        await notify.ExecuteNonQueryAsync();
    }
}
