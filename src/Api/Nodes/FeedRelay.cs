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
/// Live items of a run executed on another node than the one that recorded it: the executor pg_notify's each output chunk
/// (base64, cut to fit NOTIFY's 8000-byte payload), "running" and "events committed up to version v"; every api node
/// forwards what it receives into its RunFeed, where stream subscribers wait. A run executed where it was recorded (the
/// embedded default) is never relayed, so nothing is delivered twice. Delivery is best effort: a dropped chunk leaves a gap
/// the stream fills from the recorded output at the end.
/// </summary>
public sealed partial class FeedRelay(NpgsqlDataSource dataSource, IDocumentStore store, RunFeed feed, QueueSignals signals,
    IOptions<ExecutorOptions> executor, ILogger<FeedRelay> logger) : BackgroundService
{
    public const string Channel = "sbx_run_feed";

    // NOTIFY payloads must stay under 8000 bytes: 4,500 bytes of output are 6,000 characters of base64 plus the envelope.
    private const int ChunkBytes = 4500;

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    private readonly Channel<Relayed> _outbox = System.Threading.Channels.Channel.CreateBounded<Relayed>(
        new BoundedChannelOptions(4096) { FullMode = BoundedChannelFullMode.DropOldest, SingleReader = true });

    /// <summary>What goes over the wire: n = sending node, k = o(utput) | u (running) | e (events up to v).</summary>
    private sealed record Relayed(Guid R, string N, string K, int S = 0, long O = 0, string? B = null, string? C = null, long V = 0);

    public void Output(Guid runId, OutputChunk chunk, long offset)
    {
        var bytes = chunk.Bytes.Span;
        for (var at = 0; at < bytes.Length; at += ChunkBytes)
        {
            var part = bytes[at..Math.Min(bytes.Length, at + ChunkBytes)];
            _outbox.Writer.TryWrite(new Relayed(runId, executor.Value.NodeId, "o", chunk.Stream == OutputStream.Stdout ? 0 : 1, offset + at, Convert.ToBase64String(part)));
        }
    }

    public void Running(Guid runId, string containerId) => _outbox.Writer.TryWrite(new Relayed(runId, executor.Value.NodeId, "u", C: containerId));

    public void Recorded(Guid runId, long version) => _outbox.Writer.TryWrite(new Relayed(runId, executor.Value.NodeId, "e", V: version));

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        signals.FeedReceived = payload => _ = ReceiveAsync(payload);
        try
        {
            await foreach (var item in _outbox.Reader.ReadAllAsync(stoppingToken))
            {
                try
                {
                    await using var command = dataSource.CreateCommand("SELECT pg_notify($1, $2)");
                    command.Parameters.AddWithValue(Channel);
                    command.Parameters.AddWithValue(JsonSerializer.Serialize(item, Json));
                    await command.ExecuteNonQueryAsync(stoppingToken);
                }
                catch (Exception e) when (!stoppingToken.IsCancellationRequested)
                {
                    LogRelayFailed(e, item.R);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    private async Task ReceiveAsync(string payload)
    {
        try
        {
            var item = JsonSerializer.Deserialize<Relayed>(payload, Json);
            if (item is null || item.N == executor.Value.NodeId || !feed.Holds(item.R))
                return; // its own, or a run nobody here follows
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
        catch (Exception e)
        {
            LogReceiveFailed(e);
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Run {RunId}: a live item could not be relayed to other nodes")]
    private partial void LogRelayFailed(Exception e, Guid runId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "A relayed live item could not be delivered")]
    private partial void LogReceiveFailed(Exception e);
}
