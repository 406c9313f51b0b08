using System.Text.Json;
using System.Threading.Channels;
using Marten;
using Microsoft.Extensions.Options;
using Npgsql;
using Sandbox.Audited.Api.Streaming;
using Sandbox.Audited.Executor;
using Sandbox.Audited.Executor.Sandboxes;

namespace Sandbox.Audited.Api.Nodes;

/// <summary>
/// Live items of a run executed on another node than the one that recorded it: the executor pg_notify's its output
/// (base64), "running" and "events committed up to version v"; every api node forwards what it receives into its RunFeed,
/// where stream subscribers wait. Items wait up to 10 ms to leave together: adjacent output of one stream is merged and a
/// notification carries as many items as fit NOTIFY's 8000-byte payload, so a program writing many small chunks costs about
/// one notification per 10 ms, not one per chunk. A run executed where it was recorded (the embedded default) is never
/// relayed, so nothing is delivered twice. Delivery is best effort: a dropped chunk leaves a gap the stream fills from the
/// recorded output at the end.
/// </summary>
public sealed partial class FeedRelay(NpgsqlDataSource dataSource, IDocumentStore store, RunFeed feed, QueueSignals signals,
    IOptions<ExecutorOptions> executor, ILogger<FeedRelay> logger) : BackgroundService
{
    public const string Channel = "sbx_run_feed";

    /// <summary>How long the first item of a batch waits for others.</summary>
    public static readonly TimeSpan Window = TimeSpan.FromMilliseconds(10);

    // One item's output: 4,500 bytes are 6,000 characters of base64, which with the envelope fit one notification alone.
    private const int ChunkBytes = 4500;

    // NOTIFY payloads must stay under 8000 bytes (the payload is ASCII: JSON with base64).
    private const int PayloadChars = 7800;

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    private readonly Channel<Item> _outbox = System.Threading.Channels.Channel.CreateBounded<Item>(
        new BoundedChannelOptions(4096) { FullMode = BoundedChannelFullMode.DropOldest, SingleReader = true });

    /// <summary>An item waiting to leave; output keeps its bytes so that adjacent chunks can be merged.</summary>
    private sealed record Item(Guid Run, string Kind, int Stream = 0, long Offset = 0, byte[]? Bytes = null, string? Container = null, long Version = 0);

    /// <summary>What goes over the wire: n = sending node, k = o(utput) | u (running) | e (events up to v). A payload is an array of them.</summary>
    private sealed record Relayed(Guid R, string N, string K, int S = 0, long O = 0, string? B = null, string? C = null, long V = 0);

    public void Output(Guid runId, OutputChunk chunk, long offset)
    {
        var bytes = chunk.Bytes.Span;
        for (var at = 0; at < bytes.Length; at += ChunkBytes)
            _outbox.Writer.TryWrite(new Item(runId, "o", chunk.Stream == OutputStream.Stdout ? 0 : 1, offset + at, bytes[at..Math.Min(bytes.Length, at + ChunkBytes)].ToArray()));
    }

    public void Running(Guid runId, string containerId) => _outbox.Writer.TryWrite(new Item(runId, "u", Container: containerId));

    public void Recorded(Guid runId, long version) => _outbox.Writer.TryWrite(new Item(runId, "e", Version: version));

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        signals.FeedReceived = payload => _ = ReceiveAsync(payload);
        try
        {
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
                    command.Parameters.AddWithValue(Payloads(Merge(items), executor.Value.NodeId).ToArray());
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
    private static IEnumerable<string> Payloads(List<Item> items, string node)
    {
        var current = new List<string>();
        var length = 2;
        foreach (var item in items)
        {
            var json = JsonSerializer.Serialize(new Relayed(item.Run, node, item.Kind, item.Stream, item.Offset,
                item.Bytes is null ? null : Convert.ToBase64String(item.Bytes), item.Container, item.Version), Json);
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

    private async Task ReceiveAsync(string payload)
    {
        try
        {
            // An array from this version, one object from a node of the previous one.
            Relayed?[] items = payload.StartsWith('[') ? JsonSerializer.Deserialize<Relayed?[]>(payload, Json) ?? [] : [JsonSerializer.Deserialize<Relayed>(payload, Json)];
            foreach (var item in items)
            {
                if (item is null || item.N == executor.Value.NodeId || !feed.Holds(item.R))
                    continue; // its own, or a run nobody here follows
                switch (item.K)
                {
                    case "o":
                        feed.RelayedOutput(item.R, item.S == 0 ? OutputStream.Stdout : OutputStream.Stderr, Convert.FromBase64String(item.B ?? ""), item.O);
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

    [LoggerMessage(Level = LogLevel.Debug, Message = "{Items} live items could not be relayed to other nodes")]
    private partial void LogRelayFailed(Exception e, int items);

    [LoggerMessage(Level = LogLevel.Warning, Message = "A relayed live item could not be delivered")]
    private partial void LogReceiveFailed(Exception e);
}
