using System.Collections.Concurrent;
using System.Threading.Channels;
using JasperFx.Events;
using Marten;
using Sandbox.Audited.Api.Metrics;
using Sandbox.Audited.Audit.Events;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Executor.Sandboxes;

namespace Sandbox.Audited.Api.Streaming;

/// <summary>Something that happened to a run, as a stream subscriber sees it.</summary>
public abstract record FeedItem;

/// <summary>An event committed to the run's stream (version = its place in the stream).</summary>
public sealed record RecordedItem(long Version, string Type, DateTimeOffset? At, object Data) : FeedItem;

/// <summary>
/// The sandbox is running the code now (live only). SandboxCreated/SandboxStarted are committed while the code runs,
/// so they may reach the feed after the first output; this item is published before any output.
/// </summary>
public sealed record RunningItem(string ContainerId) : FeedItem;

/// <summary>Output bytes as the sandbox produced them, starting at Offset bytes into their stream.</summary>
public sealed record OutputItem(OutputStream Stream, byte[] Bytes, long Offset = 0) : FeedItem;

/// <summary>
/// The last item of a subscriber that fell behind: it read more slowly than the run produced, and what it had not read
/// reached RunFeed.MaxQueuedBytes, so nothing more is queued for it. What it missed is in the record, from its cursor on.
/// </summary>
public sealed record FellBehindItem : FeedItem
{
    public static readonly FellBehindItem Instance = new();
}

/// <summary>
/// The in-memory, per-run broadcaster behind GET /v1/runs/{id}/stream: the orchestrator reports every event it
/// commits and every output chunk; subscribers get what the run produced so far, then live items, until the
/// terminal event. Only runs in flight on this node are held (recorded here, or followed here for a subscriber while
/// another node records or executes them; FeedRelay brings their items); finished runs are replayed from PostgreSQL.
/// Metrics are derived from the same reports, so they count exactly what was recorded.
/// </summary>
public sealed class RunFeed(RunMetrics metrics)
{
    /// <summary>
    /// What one subscriber may have queued and not yet read (output bytes and 128 per chunk; other items 1 KiB each). A client that
    /// does not read (its socket full) would otherwise make the node hold a run's whole output for it.
    /// </summary>
    public const long MaxQueuedBytes = 4 * 1024 * 1024;

    private readonly ConcurrentDictionary<Guid, Entry> _runs = new();

    public int Subscribers => _runs.Values.Sum(e => e.SubscriberCount);

    /// <summary>
    /// Events were committed to the run's stream, starting at firstVersion. observe is false for events another node
    /// committed (relayed, or read back by the api node that waits): that node's metrics counted them.
    /// </summary>
    public void Recorded(Guid runId, long firstVersion, IReadOnlyList<object> events, bool observe = true)
    {
        if (observe)
            metrics.Observe(runId, events);
        var terminal = events.Any(e => EventCatalog.Terminal.Contains(EventCatalog.NameOf(e)));
        // Only the request opens a run's entry: events recorded after the terminal one (SandboxRemoved) must not reopen it,
        // or a later subscriber would wait on an entry that never completes.
        var entry = !terminal && events.Any(e => e is RunRequested) ? _runs.GetOrAdd(runId, _ => new Entry()) : _runs.GetValueOrDefault(runId);
        if (entry is null)
            return;
        var version = firstVersion;
        foreach (var data in events)
            entry.Publish(new RecordedItem(version++, EventCatalog.NameOf(data), AtOf(data), data));
        entry.Published(version - 1);
        if (terminal)
        {
            entry.Complete();
            _runs.TryRemove(runId, out _);
        }
    }

    public void Running(Guid runId, string containerId) => _runs.GetValueOrDefault(runId)?.PublishRunning(new RunningItem(containerId));

    // The chunk is a view of the frame reader's buffer: copied only when it is kept or someone listens.
    public void Output(Guid runId, OutputChunk chunk) => _runs.GetValueOrDefault(runId)?.PublishOutput(chunk.Stream, chunk.Bytes);

    /// <summary>The run is followed here (recorded by this node and not ended).</summary>
    public bool Holds(Guid runId) => _runs.ContainsKey(runId);

    /// <summary>The first version of the run this feed has not published yet.</summary>
    private long NextVersion(Guid runId) => (_runs.GetValueOrDefault(runId)?.LastVersion ?? 0) + 1;

    /// <summary>
    /// Publishes those of the run's committed events this feed has not published yet: events another node or path committed
    /// (that node's metrics counted them). The one way a feed catches up with the store.
    /// </summary>
    public void RecordedElsewhere(Guid runId, IReadOnlyList<IEvent> events)
    {
        var from = NextVersion(runId);
        var unseen = events.Where(e => e.Version >= from).ToList();
        if (unseen.Count > 0)
            Recorded(runId, unseen[0].Version, unseen.Select(e => e.Data).ToList(), observe: false);
    }

    /// <summary>Reads the run's events this feed has not published yet from the store and publishes them.</summary>
    public async Task CatchUpAsync(IDocumentStore store, Guid runId, CancellationToken ct)
    {
        await using var session = store.QuerySession();
        RecordedElsewhere(runId, await session.Events.FetchStreamAsync(runId, fromVersion: NextVersion(runId), token: ct));
    }

    /// <summary>
    /// Output another node's executor produced, at the offset it gave. Subscribers get each stream in order, once: bytes
    /// already published are cut off, and a chunk past a gap waits (bounded) for the bytes that fill it. Returns the offset
    /// from which this feed lacks the stream when the executor should be asked for it (see Entry.Ask), else null.
    /// </summary>
    public long? RelayedOutput(Guid runId, OutputStream stream, byte[] bytes, long offset) =>
        _runs.GetValueOrDefault(runId)?.PublishOutputAt(stream, bytes, offset);

    /// <summary>
    /// What a run's feed lacks, for a catch-up from the executor: for each stream not asked for within the last second, the
    /// bytes it has published in order (its next offset). Empty when the run is not held here, or both were asked for lately.
    /// </summary>
    public IReadOnlyList<(OutputStream Stream, long From)> Missing(Guid runId) => _runs.GetValueOrDefault(runId)?.Missing() ?? [];

    /// <summary>Streams of the run whose feed holds chunks past a gap and may ask for it again now: where each gap begins.</summary>
    public IReadOnlyList<(OutputStream Stream, long From)> Gaps(Guid runId) => _runs.GetValueOrDefault(runId)?.Gaps() ?? [];

    /// <summary>
    /// Another node follows a run this node records and executes: its live items go to forward from now on (output and
    /// sandbox_running), after what this feed kept of them from the given offsets (so the follower gets them in order). A run
    /// whose output is relayed here from another executor, or followed here, is that executor's to answer: nothing is forwarded.
    /// </summary>
    public void Forward(Guid runId, OutputStream stream, long from, Action<FeedItem> forward) =>
        _runs.GetValueOrDefault(runId)?.Forward(stream, from, forward);

    /// <summary>
    /// Subscribes to a run in flight on this node: the output produced so far plus every later item. Null when
    /// the run is not recorded here (finished, or recorded by another node, even if followed here): see Follow.
    /// </summary>
    public Subscription? Subscribe(Guid runId) => _runs.GetValueOrDefault(runId) is { Followed: false } entry ? entry.Subscribe() : null;

    /// <summary>
    /// Follows a run another node recorded, for a subscriber here: the relay (LISTEN) publishes its output and events into
    /// this entry from now on; the caller catches up from the store. The entry outlives its last subscriber by
    /// Entry.Linger (or until the run's end is seen), so that a stream reopened meanwhile is served from what it received
    /// and asks the executor only for what it lacks.
    /// </summary>
    public Subscription Follow(Guid runId, long lastVersion)
    {
        while (true)
        {
            Entry? created = null;
            created = new Entry(() => _runs.TryRemove(new KeyValuePair<Guid, Entry>(runId, created!)));
            var entry = _runs.GetOrAdd(runId, created);
            entry.Published(lastVersion);
            if (entry.TrySubscribe() is { } subscription)
                return subscription;
        }
    }

    public sealed class Subscription(Entry entry, Subscriber subscriber, IReadOnlyList<FeedItem> sofar, long version) : IDisposable
    {
        public IReadOnlyList<FeedItem> SoFar => sofar;

        /// <summary>The last event version the entry had published when this subscription began.</summary>
        public long Version => version;

        /// <summary>Live items; the last is a FellBehindItem when this subscriber fell more than MaxQueuedBytes behind.</summary>
        public ChannelReader<FeedItem> Live => subscriber.Reader;

        public void Dispose() => entry.Unsubscribe(subscriber);
    }

    /// <summary>
    /// One subscriber's queue, bounded by what it has not read (MaxQueuedBytes): past that it gets FellBehindItem and is
    /// completed, instead of the node holding the output for a client that does not read. Written under its entry's lock.
    /// </summary>
    public sealed class Subscriber
    {
        private readonly Channel<FeedItem> _channel = Channel.CreateUnbounded<FeedItem>(new UnboundedChannelOptions { SingleReader = true });
        private long _queued;
        private bool _behind;

        public Subscriber() => Reader = new CountingReader(this);

        public ChannelReader<FeedItem> Reader { get; }

        /// <summary>Queues the item, or ends this subscriber's live items when it would go past the bound.</summary>
        public void Write(FeedItem item)
        {
            if (_behind)
                return;
            if (Interlocked.Add(ref _queued, Weight(item)) > MaxQueuedBytes)
            {
                _behind = true;
                _channel.Writer.TryWrite(FellBehindItem.Instance);
                _channel.Writer.TryComplete();
                return;
            }
            _channel.Writer.TryWrite(item);
        }

        public void Complete() => _channel.Writer.TryComplete();

        // An item's own overhead counts too, so that a run writing a byte at a time cannot queue millions of items.
        private static long Weight(FeedItem item) => item is OutputItem o ? o.Bytes.Length + 128 : 1024;

        // Counts an item as read when it leaves the queue.
        private sealed class CountingReader(Subscriber owner) : ChannelReader<FeedItem>
        {
            public override Task Completion => owner._channel.Reader.Completion;

            public override bool TryRead(out FeedItem item)
            {
                if (!owner._channel.Reader.TryRead(out item!))
                    return false;
                if (item is not FellBehindItem)
                    Interlocked.Add(ref owner._queued, -Weight(item));
                return true;
            }

            public override ValueTask<bool> WaitToReadAsync(CancellationToken ct = default) => owner._channel.Reader.WaitToReadAsync(ct);
        }
    }

    /// <summary>
    /// One run's live items; onIdle is set for a followed run (recorded elsewhere) and removes it once nobody has listened for
    /// Linger.
    /// </summary>
    public sealed class Entry(Action? onIdle = null)
    {
        /// <summary>How long a followed run's entry outlives its last subscriber, unless the run's end comes first.</summary>
        public static readonly TimeSpan Linger = TimeSpan.FromSeconds(30);

        private bool _idle;

        // Counts the times the last subscriber left: an expiry scheduled before a later leave is not this one's to act on.
        private long _leaves;

        public bool Followed => onIdle is not null;

        // Bounds what a run holds for subscribers that have not come yet, whatever its output size.
        private const int KeptOutputBytes = Nodes.FeedRelay.KeptBytes;

        // Bounds relayed chunks held past a gap, per stream, until the executor's catch-up fills it.
        private const int PendingBytes = 64 * 1024;

        // A gap is asked for at most this often per stream: the answer is on its way meanwhile.
        private const long AskEveryMs = 1000;

        private readonly List<FeedItem> _kept = [];
        private readonly List<Subscriber> _subscribers = [];
        // Bytes of each stream published in order (for relayed output: up to the first gap).
        private readonly long[] _produced = new long[2];
        private readonly List<(long Offset, byte[] Bytes)>[] _pending = [[], []];
        private readonly int[] _pendingBytes = new int[2];
        private readonly long[] _askedAt = [-AskEveryMs, -AskEveryMs];
        private bool _completed;
        private bool _relayed;
        private Action<FeedItem>? _forward;
        private long _lastVersion;

        public long LastVersion
        {
            get { lock (_kept) return _lastVersion; }
        }

        public void Published(long version)
        {
            lock (_kept)
                _lastVersion = Math.Max(_lastVersion, version);
        }

        public long? PublishOutputAt(OutputStream stream, byte[] bytes, long offset)
        {
            lock (_kept)
            {
                _relayed = true;
                var index = stream == OutputStream.Stdout ? 0 : 1;
                var pending = _pending[index];
                if (offset > _produced[index])
                {
                    // Past the executor's buffer a gap can no longer be filled live: the rest of the stream comes from the record.
                    if (_produced[index] >= Nodes.FeedRelay.KeptBytes)
                    {
                        pending.Clear();
                        _pendingBytes[index] = 0;
                        return null;
                    }
                    if (_pendingBytes[index] + bytes.Length <= PendingBytes)
                    {
                        pending.Add((offset, bytes));
                        _pendingBytes[index] += bytes.Length;
                    }
                    return Ask(index);
                }
                Append(stream, bytes, offset);
                for (var i = 0; i < pending.Count; i++)
                {
                    if (pending[i].Offset > _produced[index])
                        continue;
                    var (at, held) = pending[i];
                    pending.RemoveAt(i);
                    _pendingBytes[index] -= held.Length;
                    Append(stream, held, at);
                    i = -1; // what it published may connect another held chunk
                }
                return pending.Count > 0 ? Ask(index) : null;
            }
        }

        // Publishes the part of a chunk past what this stream has published; the chunk starts at or before that point.
        private void Append(OutputStream stream, byte[] bytes, long offset)
        {
            var index = stream == OutputStream.Stdout ? 0 : 1;
            var skip = _produced[index] - offset;
            if (skip >= bytes.Length)
                return;
            var fresh = skip == 0 ? bytes : bytes[(int)skip..];
            Publish(new OutputItem(stream, fresh, _produced[index]), keep: _produced[index] < KeptOutputBytes);
            _produced[index] += fresh.Length;
        }

        // The offset to ask the executor for, unless it was asked for the stream within AskEveryMs or could not answer.
        private long? Ask(int index)
        {
            var now = Environment.TickCount64;
            if (_produced[index] >= Nodes.FeedRelay.KeptBytes || now - _askedAt[index] < AskEveryMs)
                return null;
            _askedAt[index] = now;
            return _produced[index];
        }

        public void PublishRunning(RunningItem item)
        {
            lock (_kept)
            {
                // A catch-up answer repeats it: one is kept, and a subscriber's cursor skips a second anyway.
                if (_kept.Any(k => k is RunningItem))
                    return;
                Publish(item, keep: true);
                _forward?.Invoke(item);
            }
        }

        public void Forward(OutputStream stream, long from, Action<FeedItem> forward)
        {
            lock (_kept)
            {
                if (onIdle is not null || _relayed || _completed)
                    return;
                foreach (var item in _kept)
                    if (item is RunningItem || (item is OutputItem o && o.Stream == stream && o.Offset + o.Bytes.Length > from))
                        forward(item);
                _forward = forward;
            }
        }

        public IReadOnlyList<(OutputStream Stream, long From)> Gaps()
        {
            lock (_kept)
            {
                var gaps = new List<(OutputStream, long)>(2);
                for (var index = 0; index < 2; index++)
                    if (_pending[index].Count > 0 && Ask(index) is { } from)
                        gaps.Add((index == 0 ? OutputStream.Stdout : OutputStream.Stderr, from));
                return gaps;
            }
        }

        /// <summary>Each stream's next offset, counted as asked for (a catch-up request is about to leave), unless asked lately.</summary>
        public IReadOnlyList<(OutputStream Stream, long From)> Missing()
        {
            lock (_kept)
            {
                var missing = new List<(OutputStream, long)>(2);
                for (var index = 0; index < 2; index++)
                    if (Ask(index) is { } from)
                        missing.Add((index == 0 ? OutputStream.Stdout : OutputStream.Stderr, from));
                return missing;
            }
        }

        public int SubscriberCount
        {
            get { lock (_kept) return _subscribers.Count; }
        }

        public void Publish(FeedItem item, bool keep = false)
        {
            lock (_kept)
            {
                if (keep)
                    _kept.Add(item);
                foreach (var subscriber in _subscribers)
                    subscriber.Write(item);
            }
        }

        /// <summary>
        /// The first KeptOutputBytes of each stream are kept for late subscribers, each chunk with its offset so that a resumed
        /// stream skips what it had; a late subscriber gets the rest from the recorded output once the run ends.
        /// </summary>
        public void PublishOutput(OutputStream stream, ReadOnlyMemory<byte> bytes)
        {
            lock (_kept)
            {
                var index = stream == OutputStream.Stdout ? 0 : 1;
                var keep = _produced[index] < KeptOutputBytes;
                if (keep || _subscribers.Count > 0 || _forward is not null)
                {
                    var item = new OutputItem(stream, bytes.ToArray(), _produced[index]);
                    Publish(item, keep);
                    _forward?.Invoke(item);
                }
                _produced[index] += bytes.Length;
            }
        }

        public void Complete()
        {
            lock (_kept)
            {
                _completed = true;
                foreach (var subscriber in _subscribers)
                    subscriber.Complete();
            }
        }

        /// <summary>Null when a followed entry already went idle (its last subscriber left): follow afresh.</summary>
        public Subscription? TrySubscribe()
        {
            lock (_kept)
                return _idle ? null : Subscribe();
        }

        public Subscription Subscribe()
        {
            var subscriber = new Subscriber();
            lock (_kept)
            {
                if (_completed)
                    subscriber.Complete();
                else
                    _subscribers.Add(subscriber);
                return new Subscription(this, subscriber, _kept.ToList(), _lastVersion);
            }
        }

        public void Unsubscribe(Subscriber subscriber)
        {
            long leave;
            lock (_kept)
            {
                if (!_subscribers.Remove(subscriber) || onIdle is null || _subscribers.Count > 0)
                    return;
                leave = ++_leaves;
            }
            _ = ExpireAsync(leave);
        }

        // Removes the entry Linger after its last subscriber left, unless one came (and went) meanwhile.
        private async Task ExpireAsync(long leave)
        {
            await Task.Delay(Linger);
            lock (_kept)
            {
                if (_idle || _subscribers.Count > 0 || leave != _leaves)
                    return;
                _idle = true;
            }
            onIdle!();
        }
    }

    private static DateTimeOffset? AtOf(object data) =>
        data.GetType().GetProperty("At")?.GetValue(data) as DateTimeOffset?;
}
