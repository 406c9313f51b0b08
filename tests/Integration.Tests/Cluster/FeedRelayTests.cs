using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using Sandbox.Audited.Api.Nodes;
using Sandbox.Audited.Api.Streaming;
using Sandbox.Audited.Executor.Sandboxes;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Cluster;

/// <summary>Live output relayed from the executor node to the api node through PostgreSQL NOTIFY, on the cluster's two in-process nodes.</summary>
[Collection(ClusterCollection.Name)]
public sealed class FeedRelayTests(ClusterFixture cluster)
{
    [Fact]
    public async Task ManySmallChunksCrossNodesInAboutOneNotificationPerWindowAndArriveWholeAndInPlace()
    {
        await RelaysReadyAsync();
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
        await RelaysReadyAsync();
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
    public async Task AFollowerThatJoinsLateIsSentWhatCameBeforeThenLiveChunksOnceAndInOrder()
    {
        await RelaysReadyAsync();
        var runId = Guid.CreateVersion7();
        var feed = cluster.ApiServices.GetRequiredService<RunFeed>();
        var executor = cluster.ExecutorServices.GetRequiredService<FeedRelay>();
        using var open = executor.Open(runId);
        // Written before anyone on the api node follows the run: relayed, and dropped there (nobody holds the run).
        executor.Output(runId, new OutputChunk(OutputStream.Stdout, "before 1\n"u8.ToArray()), 0);
        executor.Output(runId, new OutputChunk(OutputStream.Stderr, "err\n"u8.ToArray()), 0);
        executor.Output(runId, new OutputChunk(OutputStream.Stdout, "before 2\n"u8.ToArray()), 9);
        await Task.Delay(300);

        using var subscription = feed.Follow(runId, 0);
        cluster.ApiServices.GetRequiredService<FeedRelay>().CatchUp(runId);
        // Live while the catch-up is on its way: it must neither be lost nor come before what precedes it.
        executor.Output(runId, new OutputChunk(OutputStream.Stdout, "live\n"u8.ToArray()), 18);

        var streams = await ReadAsync(subscription, stdout: 23, stderr: 4);
        Assert.Equal("before 1\nbefore 2\nlive\n", streams[0]);
        Assert.Equal("err\n", streams[1]);
    }

    [Fact]
    public async Task AGapIsAskedOfTheExecutorByTheFirstChunkPastItAndFilledInPlace()
    {
        await RelaysReadyAsync();
        var runId = Guid.CreateVersion7();
        var feed = cluster.ApiServices.GetRequiredService<RunFeed>();
        var executor = cluster.ExecutorServices.GetRequiredService<FeedRelay>();
        using var open = executor.Open(runId);
        executor.Output(runId, new OutputChunk(OutputStream.Stdout, "one\n"u8.ToArray()), 0);
        executor.Output(runId, new OutputChunk(OutputStream.Stdout, "two\n"u8.ToArray()), 4);
        await Task.Delay(300);

        // Followed without a catch-up (as when the request, or chunks, were lost on the way): the next chunk shows the gap.
        using var subscription = feed.Follow(runId, 0);
        executor.Output(runId, new OutputChunk(OutputStream.Stdout, "three\n"u8.ToArray()), 8);

        var streams = await ReadAsync(subscription, stdout: 14, stderr: 0);
        Assert.Equal("one\ntwo\nthree\n", streams[0]);
    }

    [Fact]
    public async Task AFollowerJoiningAfterMoreThanTheExecutorKeepsGetsTheFirstKeptBytesAndNothingLiveAfterThem()
    {
        await RelaysReadyAsync();
        var runId = Guid.CreateVersion7();
        var feed = cluster.ApiServices.GetRequiredService<RunFeed>();
        var executor = cluster.ExecutorServices.GetRequiredService<FeedRelay>();
        using var open = executor.Open(runId);
        // 300 KiB written before anyone follows: the executor keeps the first 256 KiB of it, not the whole.
        var written = new byte[300 * 1024];
        new Random(7).NextBytes(written);
        var marker = Guid.CreateVersion7();
        using (var markers = feed.Follow(marker, 0))
        {
            for (var at = 0; at < written.Length; at += 30 * 1024)
                executor.Output(runId, new OutputChunk(OutputStream.Stdout, written.AsMemory(at, 30 * 1024)), at);
            // Notifications arrive in the order they were sent: once the marker is here, so are those chunks (and were dropped).
            executor.Output(marker, new OutputChunk(OutputStream.Stdout, "marker"u8.ToArray()), 0);
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
            Assert.IsType<OutputItem>(await markers.Live.ReadAsync(timeout.Token));
        }

        using var subscription = feed.Follow(runId, 0);
        cluster.ApiServices.GetRequiredService<FeedRelay>().CatchUp(runId);
        executor.Output(runId, new OutputChunk(OutputStream.Stdout, "after\n"u8.ToArray()), written.Length);

        var bytes = new List<byte>();
        using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15)))
            while (bytes.Count < FeedRelay.KeptBytes)
                if (await subscription.Live.ReadAsync(timeout.Token) is OutputItem o)
                {
                    Assert.Equal(bytes.Count, o.Offset);
                    bytes.AddRange(o.Bytes);
                }
        Assert.Equal(written[..FeedRelay.KeptBytes], bytes.ToArray());
        // What follows the gap (44 KiB the executor did not keep, then "after") is the record's to give, at the end.
        await Task.Delay(500);
        Assert.False(subscription.Live.TryRead(out var more), $"{more} after the executor's buffer");
    }

    [Fact]
    public async Task ARunAnEmbeddedNodeRecordsAndExecutesIsFollowedLiveFromAnotherNodeThatJoinsLate()
    {
        const string tenant = "tenant-embedded-follow";
        var nodeId = "embedded-" + Guid.NewGuid().ToString("N")[..8];
        await using var embedded = cluster.StartNode(nodeId, "api,executor", cluster.Database.AppConnection, new());
        using var viaEmbedded = cluster.Client(embedded, "erin", tenant);
        using var viaApi = cluster.Api("erin", tenant);
        var (accepted, body) = await viaEmbedded.RunAsync(new { language = "shell", code = "echo one; sleep 1.5; echo two; sleep 2.5", wait = false });
        Assert.Equal(HttpStatusCode.Accepted, accepted.StatusCode);
        var runId = Guid.Parse(body.Str("runId"));
        await Eventually.WaitUntilAsync(async () => await cluster.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'sandbox_started'", runId) == 1,
            () => "the run did not start", TimeSpan.FromSeconds(30), pollMs: 50);
        await Task.Delay(300); // "one" is printed: the api node follows after it

        var clock = Stopwatch.StartNew();
        using var response = await viaApi.GetAsync($"/v1/runs/{runId}/stream", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var received = await ServerSentEvents.ReadUntilEndAsync(response, clock);

        Assert.Equal(nodeId, await cluster.Database.ScalarAsync<string>(
            "SELECT data ->> 'node' FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'sandbox_created'", runId));
        var stdout = received.Where(r => r.Event == "stdout").ToList();
        Assert.Equal("one\ntwo\n", string.Concat(stdout.Select(r => JsonNode.Parse(r.Data)!["text"]!.GetValue<string>())));
        var end = received.Single(r => r.Event == "end").At;
        var one = stdout.First(r => r.Data.Contains("one", StringComparison.Ordinal)).At;
        var two = stdout.First(r => r.Data.Contains("two", StringComparison.Ordinal)).At;
        // "one" came before the follower, "two" 1.5 s later and 2.5 s before the end: each well before the end, not from the record.
        Assert.True(end - one > TimeSpan.FromSeconds(2), $"one at {one.TotalSeconds:F2} s, the end at {end.TotalSeconds:F2} s");
        Assert.True(end - two > TimeSpan.FromSeconds(1.2), $"two at {two.TotalSeconds:F2} s, the end at {end.TotalSeconds:F2} s");
    }

    [Fact]
    public void AFollowedRunOutlivesItsLastSubscriberSoAReopenIsServedFromItAndAsksNoMoreThanOnceASecond()
    {
        var feed = cluster.ApiServices.GetRequiredService<RunFeed>();
        var runId = Guid.CreateVersion7();
        using (feed.Follow(runId, 0))
            Assert.Equal([(OutputStream.Stdout, 0L), (OutputStream.Stderr, 0L)], feed.Missing(runId));
        Assert.True(feed.Holds(runId), "the entry went with its last subscriber");
        Assert.Null(feed.Subscribe(runId)); // a followed run is followed afresh (with its catch-up from the store), not subscribed
        Assert.Null(feed.RelayedOutput(runId, OutputStream.Stdout, "abc"u8.ToArray(), 0)); // relayed while nobody listens

        using var reopened = feed.Follow(runId, 0);
        Assert.Equal("abc", Encoding.UTF8.GetString(Assert.IsType<OutputItem>(Assert.Single(reopened.SoFar)).Bytes));
        Assert.Empty(feed.Missing(runId)); // both streams were asked for within the last second
    }

    [Fact]
    public async Task TheExecutorAnswersANodesRepeatedCatchUpRequestsOnceASecondAndWithTheRunsContainer()
    {
        await RelaysReadyAsync();
        var runId = Guid.CreateVersion7();
        var executor = cluster.ExecutorServices.GetRequiredService<FeedRelay>();
        using var open = executor.Open(runId, "container-late");
        executor.Output(runId, new OutputChunk(OutputStream.Stdout, new byte[20_000]), 0);
        await Task.Delay(300);
        await using var listener = new NpgsqlConnection(cluster.Database.AppConnection);
        await listener.OpenAsync();
        var answers = new ConcurrentQueue<string>();
        listener.Notification += (_, e) =>
        {
            if (e.Payload.Contains(runId.ToString("D"), StringComparison.Ordinal) && !e.Payload.Contains("\"k\":\"c\"", StringComparison.Ordinal))
                answers.Enqueue(e.Payload);
        };
        await using (var listen = new NpgsqlCommand($"LISTEN {FeedRelay.Channel}", listener))
            await listen.ExecuteNonQueryAsync();

        // A node (with the nodes' key) asking for the whole buffer ten times in a row: one answer.
        var key = FeedRelay.KeyFrom((await cluster.Database.ScalarAsync<string>("SELECT key FROM sandbox.relay_key"))!);
        for (var i = 0; i < 10; i++)
            await NotifyAsync(cluster.Database.AppConnection,
                FeedRelay.Sign(key, $$"""[{"r":"{{runId}}","n":"asker","k":"c","s":0,"o":0,"t":{{DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() + i}}}]"""));
        var until = DateTime.UtcNow.AddSeconds(0.8);
        while (DateTime.UtcNow < until)
            await listener.WaitAsync(TimeSpan.FromMilliseconds(100));

        var sent = string.Concat(answers);
        Assert.Contains("container-late", sent, StringComparison.Ordinal);
        Assert.Equal(20_000 / FeedRelayChunk + 1, answers.Sum(a => a.Split("\"k\":\"o\"").Length - 1));
    }

    // The relay's item size (4,500 bytes): 20,000 bytes go as 5 items.
    private const int FeedRelayChunk = 4500;

    [Fact]
    public void AFeedPublishesRelayedOutputOnceInOrderAndHoldsAChunkPastAGapUntilItIsFilled()
    {
        var entry = new RunFeed.Entry();
        using var subscription = entry.Subscribe();
        Assert.Null(entry.PublishOutputAt(OutputStream.Stdout, "abc"u8.ToArray(), 0));
        Assert.Null(entry.PublishOutputAt(OutputStream.Stdout, "bcd"u8.ToArray(), 1)); // overlaps: only "d" is new
        Assert.Equal(4, entry.PublishOutputAt(OutputStream.Stdout, "gh"u8.ToArray(), 6)); // "ef" missing: ask from 4
        Assert.Null(entry.PublishOutputAt(OutputStream.Stdout, "ij"u8.ToArray(), 8)); // asked within the last second
        Assert.Null(entry.PublishOutputAt(OutputStream.Stdout, "ef"u8.ToArray(), 4)); // fills the gap: gh and ij follow
        Assert.Null(entry.PublishOutputAt(OutputStream.Stdout, "abcdefghij"u8.ToArray(), 0)); // a late catch-up: nothing new

        var published = new List<OutputItem>();
        while (subscription.Live.TryRead(out var item))
            published.Add(Assert.IsType<OutputItem>(item));
        Assert.Equal("abcdefghij", string.Concat(published.Select(o => Encoding.UTF8.GetString(o.Bytes))));
        Assert.Equal([0L, 3, 4, 6, 8], published.Select(o => o.Offset));
    }

    [Fact]
    public void PastTheExecutorsBufferAGapIsNotAskedForAndTheChunksAfterItAreLeftToTheRecord()
    {
        var entry = new RunFeed.Entry();
        using var subscription = entry.Subscribe();
        var kept = new byte[FeedRelay.KeptBytes];
        Assert.Null(entry.PublishOutputAt(OutputStream.Stderr, kept, 0));
        Assert.Null(entry.PublishOutputAt(OutputStream.Stderr, "late"u8.ToArray(), FeedRelay.KeptBytes + 100));
        Assert.Null(entry.PublishOutputAt(OutputStream.Stderr, "x"u8.ToArray(), FeedRelay.KeptBytes + 104));
        var published = new List<FeedItem>();
        while (subscription.Live.TryRead(out var item))
            published.Add(item);
        Assert.Equal(FeedRelay.KeptBytes, Assert.IsType<OutputItem>(Assert.Single(published)).Bytes.Length);
    }

    // Both nodes read the relay key at start: until then nothing crosses, which a test right after the fixture's start would meet.
    private Task RelaysReadyAsync() => Eventually.WaitUntilAsync(
        () => Task.FromResult(cluster.ApiServices.GetRequiredService<FeedRelay>().Relaying && cluster.ExecutorServices.GetRequiredService<FeedRelay>().Relaying),
        () => "the nodes' relays did not start", TimeSpan.FromSeconds(30), pollMs: 50);

    private static async Task<string[]> ReadAsync(RunFeed.Subscription subscription, int stdout, int stderr)
    {
        var received = new[] { new StringBuilder(), new StringBuilder() };
        var bytes = new long[2];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        while (bytes[0] < stdout || bytes[1] < stderr)
        {
            if (await subscription.Live.ReadAsync(timeout.Token) is not OutputItem o)
                continue;
            var index = (int)o.Stream;
            Assert.Equal(bytes[index], o.Offset); // in order, without a gap or a repeat
            received[index].Append(Encoding.UTF8.GetString(o.Bytes));
            bytes[index] += o.Bytes.Length;
        }
        return [received[0].ToString(), received[1].ToString()];
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
