using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Marten;
using Microsoft.Extensions.Options;
using Npgsql;
using Polly;
using Polly.Retry;
using Sandbox.Audited.Api.Streaming;
using Sandbox.Audited.Audit.Queue;
using Sandbox.Audited.Executor;
using Sandbox.Audited.Executor.Sandboxes;

namespace Sandbox.Audited.Api.Nodes;

/// <summary>
/// Live items of a run executed on another node than the one that recorded it: the executor pg_notify's its output
/// (base64, with its offset in the stream), "running" and "events committed up to version v"; every api node forwards what
/// it receives into its RunFeed, where stream subscribers wait. Items wait up to 10 ms to leave together: adjacent output of
/// one stream is merged and a notification carries as many items as fit NOTIFY's 8000-byte payload, so a program writing
/// many small chunks costs about one notification per 10 ms, not one per chunk.
///
/// A node that begins following a run (a stream subscriber there) asks for what was produced before ("c": stream, from
/// offset): the executor keeps the first KeptBytes of each stream of the runs it executes for another node and sends what
/// was asked from there, and a run recorded and executed on one node is, from the first such request on, relayed by it too
/// (from what its feed kept). A feed publishes each stream once and in order (RunFeed.RelayedOutput), and the first chunk
/// past a gap (a notification lost) asks again. A follower asks at most once a second per run and stream (its feed entry
/// outlives its last subscriber by 30 s, so a reopened stream asks only for what it lacks), and the executor answers each
/// asking node at most once a second per run and stream: reopening a stream never buys a resend of the buffer. Past KeptBytes a gap cannot be filled live: that stream's rest reaches the
/// follower from the recorded output at the end, which stays the authority either way.
///
/// Any role that can log in to the database may NOTIFY on any channel (PostgreSQL checks no privilege for it), so every
/// payload carries an HMAC-SHA256 under a key only the service's nodes hold, and a payload without a valid one is dropped:
/// a client's live view shows what an executor sent, or nothing. The key is Node:RelayKey when set, else the random one
/// migration 0095 made in sandbox.relay_key, which only the service's login may read. Relayed items are not secret from
/// the database's roles, which can read the recorded output anyway. Signed items go on a channel of their own, so nodes
/// of the version before (unsigned items) and this one ignore each other during a rolling upgrade.
///
/// Any login may also LISTEN and send a signed payload again. Replayed output, "running" and "events" items change nothing (a
/// feed cuts off bytes it already has), but a replayed catch-up request would make the executor resend its kept output: so
/// each item carries its sending time under the MAC, and a catch-up request is answered only within AskFreshness of it and
/// only once.
/// </summary>
public sealed partial class FeedRelay(NpgsqlDataSource dataSource, IDocumentStore store, RunFeed feed, QueueSignals signals,
    IOptions<ExecutorOptions> executor, IOptions<NodeOptions> node, TimeProvider clock, ILogger<FeedRelay> logger)
    : BackgroundService
{
    public const string Channel = "sbx_run_feed_signed";

    /// <summary>How long the first item of a batch waits for others.</summary>
    public static readonly TimeSpan Window = TimeSpan.FromMilliseconds(10);

    // One item's output: 4,500 bytes are 6,000 characters of base64, which with the envelope fit one notification alone.
    private const int ChunkBytes = 4500;

    // NOTIFY payloads must stay under 8000 bytes (the payload is ASCII: its MAC, then JSON with base64).
    private const int PayloadChars = 7800;

    // The MAC leads the payload: 44 characters of base64, a dot, then the JSON it authenticates.
    private const int MacChars = 44;

    /// <summary>
    /// How much of each stream the executor keeps for catch-ups (the first bytes, as the recording node's feed keeps for its
    /// late subscribers): a follower that joins later, or lost a chunk, is sent what it lacks below this offset.
    /// </summary>
    public const int KeptBytes = 256 * 1024;

    // Runs this node executes for another node: the first KeptBytes of each stream, for catch-ups.
    private readonly ConcurrentDictionary<Guid, Sent> _sent = new();

    /// <summary>A catch-up request is answered at most this often per run, stream and asking node: a node that still lacks bytes asks again.</summary>
    public const long AnswerEveryMs = 1000;

    /// <summary>How far a catch-up request's sending time may be from this node's clock (the nodes' clock skew included).</summary>
    public static readonly TimeSpan AskFreshness = TimeSpan.FromSeconds(10);

    // Catch-up requests answered within AskFreshness, by run, stream, offset, asking node and sending time: a replay is one of them.
    private readonly Dictionary<(Guid Run, int Stream, long From, string Node, long At), long> _asks = [];

    // When each (run, stream, asking node) was last answered; entries older than AnswerEveryMs are pruned as it grows.
    private readonly Dictionary<(Guid Run, int Stream, string Node), long> _answered = [];

    private volatile byte[]? _key;
    private long _lastRejectionWarning;
    private long _rejected;

    /// <summary>The MAC key made from a secret (Node:RelayKey, or the database's relay key).</summary>
    public static byte[] KeyFrom(string secret) =>
        HMACSHA256.HashData(Encoding.UTF8.GetBytes("sandbox-audited feed relay"), Encoding.UTF8.GetBytes(secret));

    /// <summary>A payload as it goes over the wire: its MAC under the key, a dot, the JSON.</summary>
    public static string Sign(byte[] key, string json) => Convert.ToBase64String(HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(json))) + "." + json;

    /// <summary>The JSON of a payload whose MAC is valid under the key; null otherwise.</summary>
    public static string? Verified(byte[] key, string payload)
    {
        if (payload.Length <= MacChars || payload[MacChars] != '.')
            return null;
        Span<byte> mac = stackalloc byte[32];
        if (!Convert.TryFromBase64String(payload[..MacChars], mac, out var written) || written != mac.Length)
            return null;
        var json = payload[(MacChars + 1)..];
        return CryptographicOperations.FixedTimeEquals(mac, HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(json))) ? json : null;
    }

    /// <summary>Relayed payloads dropped for a missing or wrong MAC since start.</summary>
    public long Rejected => Interlocked.Read(ref _rejected);

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    private readonly Channel<Item> _outbox = System.Threading.Channels.Channel.CreateBounded<Item>(
        new BoundedChannelOptions(4096) { FullMode = BoundedChannelFullMode.DropOldest, SingleReader = true });

    /// <summary>An item waiting to leave; output keeps its bytes so that adjacent chunks can be merged.</summary>
    private sealed record Item(Guid Run, string Kind, int Stream = 0, long Offset = 0, byte[]? Bytes = null, string? Container = null, long Version = 0);

    /// <summary>
    /// What goes over the wire: n = sending node, k = o(utput of stream s at offset o) | u (running) | e (events up to v) |
    /// c (catch-up: send stream s of run r from offset o, asked by a node whose feed lacks it); t = when it was sent (Unix ms). A
    /// payload is an array of them.
    /// </summary>
    private sealed record Relayed(Guid R, string N, string K, int S = 0, long O = 0, string? B = null, string? C = null, long V = 0, long T = 0);

    /// <summary>What this node sent of one run's output so far: the first KeptBytes of each stream, and its container.</summary>
    private sealed class Sent(string? container)
    {
        public readonly string? Container = container;

        public readonly byte[][] Kept = [new byte[4096], new byte[4096]];
        public readonly int[] Length = new int[2];

        public void Keep(int stream, long offset, ReadOnlySpan<byte> bytes)
        {
            if (offset != Length[stream] || offset >= KeptBytes)
                return;
            var take = bytes[..Math.Min(bytes.Length, KeptBytes - Length[stream])];
            if (Length[stream] + take.Length > Kept[stream].Length)
                Array.Resize(ref Kept[stream], Math.Min(KeptBytes, Math.Max(Kept[stream].Length * 2, Length[stream] + take.Length)));
            take.CopyTo(Kept[stream].AsSpan(Length[stream]));
            Length[stream] += take.Length;
        }
    }

    /// <summary>
    /// This node executes the run for another node: what it relays is kept (bounded) for catch-ups until the handle is
    /// disposed, once the run's outcome is recorded; a follower joining later gets the rest from the record.
    /// </summary>
    public IDisposable Open(Guid runId, string? containerId = null)
    {
        var sent = _sent[runId] = new Sent(containerId);
        return new Closer(() => _sent.TryRemove(new KeyValuePair<Guid, Sent>(runId, sent)));
    }

    private sealed class Closer(Action close) : IDisposable
    {
        public void Dispose() => close();
    }

    public void Output(Guid runId, OutputChunk chunk, long offset)
    {
        if (_key is null)
            return;
        var stream = chunk.Stream == OutputStream.Stdout ? 0 : 1;
        if (!_sent.TryGetValue(runId, out var sent))
        {
            Send(runId, stream, offset, chunk.Bytes.Span);
            return;
        }
        // Under the run's lock: a catch-up answered meanwhile leaves before this chunk, so a follower gets the stream in order.
        lock (sent)
        {
            sent.Keep(stream, offset, chunk.Bytes.Span);
            Send(runId, stream, offset, chunk.Bytes.Span);
            // A subscriber on this very node follows the run: its feed gets the chunk here, not over the wire.
            if (feed.Holds(runId))
                feed.RelayedOutput(runId, chunk.Stream, chunk.Bytes.ToArray(), offset);
        }
    }

    private void Send(Guid runId, int stream, long offset, ReadOnlySpan<byte> bytes)
    {
        for (var at = 0; at < bytes.Length; at += ChunkBytes)
            _outbox.Writer.TryWrite(new Item(runId, "o", stream, offset + at, bytes[at..Math.Min(bytes.Length, at + ChunkBytes)].ToArray()));
    }

    /// <summary>
    /// A stream subscriber here began following a run recorded elsewhere: asks the executor for the output the feed lacks
    /// (what was produced before it joined), or takes it from this node's own buffer when the run executes here.
    /// </summary>
    public void CatchUp(Guid runId)
    {
        if (_key is null)
            return;
        var missing = feed.Missing(runId);
        if (_sent.TryGetValue(runId, out var sent))
        {
            lock (sent)
            {
                foreach (var (stream, from) in missing)
                    if (from < sent.Length[(int)stream])
                        feed.RelayedOutput(runId, stream, sent.Kept[(int)stream][..sent.Length[(int)stream]], 0);
            }
            return;
        }
        foreach (var (stream, from) in missing)
            Ask(runId, stream == OutputStream.Stdout ? 0 : 1, from);
    }

    /// <summary>Asks again for gaps still open in the run's feed (their answer lost on the way), at most once a second each.</summary>
    public void Repair(Guid runId)
    {
        if (_key is null)
            return;
        foreach (var (stream, from) in feed.Gaps(runId))
            Ask(runId, stream == OutputStream.Stdout ? 0 : 1, from);
    }

    /// <summary>The relay has its key and listens: live items cross nodes from now on.</summary>
    public bool Relaying => _key is not null && signals.FeedReceived is not null;

    private void Ask(Guid runId, int stream, long from)
    {
        if (from < KeptBytes)
            _outbox.Writer.TryWrite(new Item(runId, "c", stream, from));
    }

    // Another node asked for a run this node executes: what it lacks, from this node's buffer, to every node (the chunks it
    // already has are cut off there); nothing past the buffer, which the record gives at the end.
    private void Answer(Guid runId, int stream, long from, string asker)
    {
        if (stream is not (0 or 1) || from < 0 || !FirstAskWithinWindow(runId, stream, asker))
            return;
        if (!_sent.TryGetValue(runId, out var sent))
        {
            // A run recorded and executed here, not relayed so far: from now on its live items are (and what it kept first).
            feed.Forward(runId, stream == 0 ? OutputStream.Stdout : OutputStream.Stderr, from, item =>
            {
                if (item is OutputItem o)
                    Send(runId, (int)o.Stream, o.Offset, o.Bytes);
                else if (item is RunningItem r)
                    _outbox.Writer.TryWrite(new Item(runId, "u", Container: r.ContainerId));
            });
            return;
        }
        lock (sent)
        {
            // The run started before the follower joined: "running" went out before anyone there held the run.
            if (sent.Container is not null)
                _outbox.Writer.TryWrite(new Item(runId, "u", Container: sent.Container));
            if (from < sent.Length[stream])
                Send(runId, stream, from, sent.Kept[stream].AsSpan((int)from, sent.Length[stream] - (int)from));
        }
    }

    // One answer per run, stream and asking node a second: a node reopening a stream over and over must not make this node
    // resend its buffer each time to every node, crowding other runs' live items out of the outbox.
    private bool FirstAskWithinWindow(Guid runId, int stream, string asker)
    {
        var now = Environment.TickCount64;
        lock (_answered)
        {
            if (_answered.TryGetValue((runId, stream, asker), out var at) && now - at < AnswerEveryMs)
                return false;
            if (_answered.Count >= 1024)
                foreach (var old in _answered.Where(a => now - a.Value >= AnswerEveryMs).Select(a => a.Key).ToList())
                    _answered.Remove(old);
            _answered[(runId, stream, asker)] = now;
            return true;
        }
    }

    // A catch-up request sent again by someone listening on the channel is stale or already seen: only a node's own is answered.
    private bool FirstSightOfFreshAsk(Relayed ask)
    {
        var now = clock.GetUtcNow().ToUnixTimeMilliseconds();
        var window = (long)AskFreshness.TotalMilliseconds;
        if (Math.Abs(now - ask.T) > window)
            return false;
        lock (_asks)
        {
            if (_asks.Count >= 4096)
                foreach (var old in _asks.Where(a => now - a.Value > 2 * window).Select(a => a.Key).ToList())
                    _asks.Remove(old);
            return _asks.TryAdd((ask.R, ask.S, ask.O, ask.N ?? "", ask.T), now);
        }
    }

    public void Running(Guid runId, string containerId) => _ = _key is not null && _outbox.Writer.TryWrite(new Item(runId, "u", Container: containerId));

    public void Recorded(Guid runId, long version) => _ = _key is not null && _outbox.Writer.TryWrite(new Item(runId, "e", Version: version));

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            if (await KeyAsync(stoppingToken) is not { } key)
            {
                // Live output then reaches a client of another node from the record, once the run ended.
                LogNoRelayKey();
                return;
            }
            _key = key;
            signals.FeedReceived = payload => _ = ReceiveAsync(key, payload);
            while (await _outbox.Reader.WaitToReadAsync(stoppingToken))
            {
                await Task.Delay(Window, stoppingToken);
                var items = new List<Item>();
                while (_outbox.Reader.TryRead(out var item))
                    items.Add(item);
                try
                {
                    await using var command = dataSource.CreateCommand("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS w(p)");
                    command.Parameters.AddWithValue(Channel);
                    command.Parameters.AddWithValue(Payloads(Merge(items), executor.Value.NodeId, clock.GetUtcNow().ToUnixTimeMilliseconds())
                        .Select(json => Sign(key, json)).ToArray());
                    await command.ExecuteNonQueryAsync(stoppingToken);
                }
                catch (Exception e) when (!stoppingToken.IsCancellationRequested)
                {
                    LogRelayFailed(e, items.Count);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    /// <summary>Node:RelayKey, else the database's relay key (retried while the database is away); null when there is none.</summary>
    private async Task<byte[]?> KeyAsync(CancellationToken ct)
    {
        if (!string.IsNullOrEmpty(node.Value.RelayKey))
            return KeyFrom(node.Value.RelayKey);
        var untilRead = new ResiliencePipelineBuilder().AddRetry(new RetryStrategyOptions
        {
            ShouldHandle = new PredicateBuilder().Handle<Exception>(e => e is not OperationCanceledException),
            MaxRetryAttempts = int.MaxValue,
            Delay = TimeSpan.FromSeconds(2),
            OnRetry = retry =>
            {
                LogKeyUnreadable(retry.Outcome.Exception);
                return default;
            },
        }).Build();
        return await untilRead.ExecuteAsync(async token =>
        {
            await using var command = dataSource.CreateCommand("SELECT key FROM sandbox.relay_key");
            return await command.ExecuteScalarAsync(token) is string secret ? KeyFrom(secret) : null;
        }, ct);
    }

    /// <summary>Adjacent output of one run's stream, contiguous in offset, becomes one item of at most ChunkBytes.</summary>
    private static List<Item> Merge(List<Item> items)
    {
        // Each merged item's bytes are gathered once, then copied once: a program writing thousands of one-byte chunks
        // must not make the relay copy its output over and over.
        var merged = new List<(Item First, List<byte[]> Parts, int Length)>(items.Count);
        foreach (var item in items)
        {
            if (merged.Count > 0 && merged[^1] is { First.Kind: "o" } last && item.Kind == "o" && item.Run == last.First.Run
                && item.Stream == last.First.Stream && last.First.Offset + last.Length == item.Offset && last.Length + item.Bytes!.Length <= ChunkBytes)
            {
                last.Parts.Add(item.Bytes);
                merged[^1] = last with { Length = last.Length + item.Bytes.Length };
            }
            else
                merged.Add((item, [item.Bytes ?? []], item.Bytes?.Length ?? 0));
        }
        return [.. merged.Select(m => m.Parts.Count == 1 ? m.First : m.First with { Bytes = Concat(m.Parts, m.Length) })];
    }

    private static byte[] Concat(List<byte[]> parts, int length)
    {
        var bytes = new byte[length];
        var at = 0;
        foreach (var part in parts)
        {
            part.CopyTo(bytes, at);
            at += part.Length;
        }
        return bytes;
    }

    /// <summary>The items as JSON arrays, each as long as fits one notification, in order.</summary>
    private static IEnumerable<string> Payloads(List<Item> items, string node, long at)
    {
        var current = new List<string>();
        var length = 2;
        foreach (var item in items)
        {
            var json = JsonSerializer.Serialize(new Relayed(item.Run, node, item.Kind, item.Stream, item.Offset,
                item.Bytes is null ? null : Convert.ToBase64String(item.Bytes), item.Container, item.Version, at), Json);
            if (current.Count > 0 && length + 1 + json.Length > PayloadChars)
            {
                yield return "[" + string.Join(',', current) + "]";
                current.Clear();
                length = 2;
            }
            current.Add(json);
            length += json.Length + 1;
        }
        if (current.Count > 0)
            yield return "[" + string.Join(',', current) + "]";
    }

    private async Task ReceiveAsync(byte[] key, string payload)
    {
        try
        {
            if (Verified(key, payload) is not { } json)
            {
                Reject();
                return;
            }
            var items = JsonSerializer.Deserialize<Relayed?[]>(json, Json) ?? [];
            foreach (var item in items)
            {
                if (item is null || item.N == executor.Value.NodeId)
                    continue; // its own
                if (item.K == "c")
                {
                    if (FirstSightOfFreshAsk(item))
                        Answer(item.R, item.S, item.O, item.N ?? "");
                    continue;
                }
                if (!feed.Holds(item.R))
                    continue; // a run nobody here follows
                switch (item.K)
                {
                    case "o":
                        // A gap before this chunk (a chunk lost on the way): ask the executor for the bytes that fill it.
                        if (feed.RelayedOutput(item.R, item.S == 0 ? OutputStream.Stdout : OutputStream.Stderr, Convert.FromBase64String(item.B ?? ""), item.O) is { } missing)
                            Ask(item.R, item.S, missing);
                        break;
                    case "u":
                        feed.Running(item.R, item.C ?? "");
                        break;
                    case "e":
                        await feed.CatchUpAsync(store, item.R, CancellationToken.None);
                        break;
                }
            }
        }
        catch (Exception e)
        {
            LogReceiveFailed(e);
        }
    }

    // A flood of forged notifications must not become a flood of log lines: one warning a minute, with the count.
    private void Reject()
    {
        var count = Interlocked.Increment(ref _rejected);
        var now = clock.GetTimestamp();
        var last = Interlocked.Read(ref _lastRejectionWarning);
        if ((last == 0 || clock.GetElapsedTime(last, now) >= TimeSpan.FromMinutes(1)) && Interlocked.CompareExchange(ref _lastRejectionWarning, now, last) == last)
            LogRejected(count);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Dropped a relayed live item without a valid MAC ({Count} since start): a database role other "
        + "than the service's nodes is sending on the relay channel, or the nodes' Node:RelayKey settings differ")]
    private partial void LogRejected(long count);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Live output is not relayed between nodes: sandbox.relay_key is empty (apply the migrations) "
        + "and Node:RelayKey is not set; clients of another node see a run's output when it ends")]
    private partial void LogNoRelayKey();

    [LoggerMessage(Level = LogLevel.Warning, Message = "The relay key could not be read from the database; retrying")]
    private partial void LogKeyUnreadable(Exception? e);

    [LoggerMessage(Level = LogLevel.Debug, Message = "{Items} live items could not be relayed to other nodes")]
    private partial void LogRelayFailed(Exception e, int items);

    [LoggerMessage(Level = LogLevel.Warning, Message = "A relayed live item could not be delivered")]
    private partial void LogReceiveFailed(Exception e);
}
