using System.Net.ServerSentEvents;
using System.Runtime.CompilerServices;
using System.Text.Json;
using Marten;
using Microsoft.AspNetCore.Http.HttpResults;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Api.Nodes;
using Sandbox.Audited.Api.Runs;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Domain.Text;
using Sandbox.Audited.Executor.Sandboxes;

namespace Sandbox.Audited.Api.Streaming;

/// <summary>
/// GET /v1/runs/{id}/stream: server-sent events. First what is recorded (from PostgreSQL), then the output so far,
/// then lifecycle steps and output chunks live as they happen, then what the client lacks of the recorded output (read
/// from the store in segments, or `output_erased` when it was erased), and a final `end` message with the status. Every
/// message has an id (a <see cref="StreamCursor"/>); a reconnect with Last-Event-ID continues after that message,
/// and one after `end` answers 204 No Content, which tells a standard EventSource client to stop. A client that reads
/// more slowly than the run writes gets `fell_behind` once RunFeed.MaxQueuedBytes wait for it, and the stream ends there
/// (without `end`): it reconnects from that message's id.
/// </summary>
public static class StreamEndpoints
{
    /// <summary>How long a standard client waits before it reconnects (the `retry` field of the first message).</summary>
    public static readonly TimeSpan Retry = TimeSpan.FromSeconds(2);

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private static readonly TimeSpan OtherNodePoll = TimeSpan.FromMilliseconds(250);

    public static void MapRunStream(this IEndpointRouteBuilder app) =>
        app.MapGet("/v1/runs/{id:guid}/stream", Stream)
            .RequireAuthorization()
            .WithTags("Runs");

    public static async Task<Results<ServerSentEventsResult<string>, NoContent, ProblemHttpResult>> Stream(
        Guid id, HttpContext http, IDocumentStore store, RunFeed feed, FeedRelay relay, EvidenceStore evidence, CancellationToken ct)
    {
        var lastEventId = http.Request.Headers["Last-Event-ID"].ToString();
        var cursor = StreamCursor.Start;
        if (lastEventId.Length > 0 && lastEventId != StreamCursor.End && !StreamCursor.TryParse(lastEventId, out cursor))
            return TypedResults.Problem(Problems.Create(400, Problems.InvalidRequest, "Invalid Last-Event-ID",
                $"Last-Event-ID '{lastEventId}' is not an id this stream sent; reconnect without it to start from the beginning."));

        // Subscribe before reading the store, so that nothing falls between the replay and the live items.
        var subscription = feed.Subscribe(id);
        if (subscription is not null)
            http.Response.RegisterForDispose(subscription);
        var (events, summary) = await LoadAsync(store, id, 0, ct);
        var caller = http.User.ToCaller();
        if (events.Count == 0 || !Access.MayWatch(caller, RunOwner.Of(summary)))
            return TypedResults.Problem(Problems.Create(404, Problems.NotFound, "Run not found", $"No run {id} of yours is visible to you (only the run's owner may stream it)."));
        if (lastEventId == StreamCursor.End)
            return TypedResults.NoContent();
        // Recorded by another node and still running: follow it here through the relay, caught up from the store meanwhile,
        // and the output produced before this node followed it asked of the executor.
        if (subscription is null && !summary.IsTerminal)
        {
            subscription = feed.Follow(id, events.Count == 0 ? 0 : events[^1].Version);
            http.Response.RegisterForDispose(subscription);
            // The entry outlived an earlier subscriber and published events committed after the read: replay those too.
            if (subscription.Version > events[^1].Version)
                (events, summary) = await LoadAsync(store, id, 0, ct);
            relay.CatchUp(id);
            _ = CatchUpAsync(id, store, feed, relay, ct);
        }

        http.Response.Headers["X-Accel-Buffering"] = "no";
        return TypedResults.ServerSentEvents(Messages(id, store, evidence, subscription, events, summary, cursor, ct));
    }

    private static async IAsyncEnumerable<SseItem<string>> Messages(Guid id, IDocumentStore store, EvidenceStore evidence, RunFeed.Subscription? subscription,
        IReadOnlyList<JasperFx.Events.IEvent> events, RunSummary summary, StreamCursor cursor, [EnumeratorCancellation] CancellationToken ct)
    {
        var writer = new MessageWriter(cursor);
        foreach (var e in events)
            foreach (var message in writer.Write(new RecordedItem(e.Version, e.EventTypeName, e.Timestamp, e.Data)))
                yield return message;

        if (subscription is not null)
        {
            foreach (var item in subscription.SoFar)
                foreach (var message in writer.Write(item))
                    yield return message;
            await foreach (var item in subscription.Live.ReadAllAsync(ct))
            {
                if (item is FellBehindItem)
                {
                    // Nothing is dropped silently: the stream ends here, at this client's cursor, and a reconnect with it
                    // goes on from there (live again, and what it missed from the record once the run has ended).
                    yield return writer.Message("fell_behind", writer.Cursor.Id, JsonSerializer.Serialize(new
                    {
                        reason = FellBehindReason,
                        lastEventId = writer.Cursor.Id,
                    }, Json));
                    yield break;
                }
                var applied = writer.Cursor.Version;
                foreach (var message in writer.Write(item))
                    yield return message;
                if (item is RecordedItem r && r.Version > applied)
                    summary = RunSummary.Apply(summary, r.Data);
            }
        }
        else
        {
            // Not in flight here: finished, or running on another node — follow the store until the terminal event.
            while (!summary.IsTerminal)
            {
                await Task.Delay(OtherNodePoll, ct);
                var (more, _) = await LoadAsync(store, id, writer.Cursor.Version, ct);
                foreach (var e in more)
                {
                    foreach (var message in writer.Write(new RecordedItem(e.Version, e.EventTypeName, e.Timestamp, e.Data)))
                        yield return message;
                    summary = RunSummary.Apply(summary, e.Data);
                }
            }
        }

        // The recorded output is the whole of it: whatever live chunks did not deliver (or a replay) comes from there.
        if (summary.Output is { } output)
            foreach (var (stream, recorded) in new[] { (OutputStream.Stdout, output.Stdout), (OutputStream.Stderr, output.Stderr) })
                await foreach (var message in RecordedAsync(writer, evidence, summary.Tenant ?? "", stream, recorded, ct))
                    yield return message;
        yield return writer.Message("end", StreamCursor.End, JsonSerializer.Serialize(new { runId = id, status = summary.Status, exitCode = summary.Exit?.ExitCode }, Json));
    }

    public const string FellBehindReason = "This client read the stream more slowly than the run wrote its output, so the server stopped "
        + "holding output for it. Reconnect with Last-Event-ID set to lastEventId (a standard EventSource client does so by itself) to go on "
        + "from here: nothing is lost, what it missed comes from the record once the run has ended.";

    // The recorded output is sent in segments of this size, so that a large one is never held whole.
    private const int Segment = 48 * 1024;

    /// <summary>
    /// What the client was not sent of a recorded output, read from the store a segment at a time. An erased output says so
    /// (`output_erased`, with when and why it was erased) rather than leaving the client with an empty or cut-off stream.
    /// </summary>
    private static async IAsyncEnumerable<SseItem<string>> RecordedAsync(MessageWriter writer, EvidenceStore evidence, string tenant,
        OutputStream stream, StreamOutput recorded, [EnumeratorCancellation] CancellationToken ct)
    {
        var delivered = stream == OutputStream.Stdout ? writer.Cursor.Stdout : writer.Cursor.Stderr;
        if (!recorded.Stored)
        {
            // Recorded before the evidence store: the content is in the event.
            foreach (var message in writer.Write(new OutputItem(stream, await RunContent.BytesAsync(evidence, tenant, recorded, ct))))
                yield return message;
            yield break;
        }
        if (delivered >= recorded.Bytes)
            yield break;
        var (content, erased) = await OpenAsync(evidence, tenant, recorded.Sha256, ct);
        if (erased)
        {
            yield return Erased(writer, stream, recorded, await evidence.ErasureAsync(tenant, recorded.Sha256, ct));
            yield break;
        }
        if (content is null)
            yield break; // not in the store: GET /v1/runs/{id} names it "missing"
        long at = 0;
        await using (content)
        {
            var buffer = new byte[Segment];
            var filled = 0;
            while (true)
            {
                var read = await content.ReadAsync(buffer.AsMemory(filled), ct);
                filled += read;
                if (read > 0 && filled < buffer.Length)
                    continue;
                // A segment ends on a character's boundary where it can, so that text goes as text, not base64.
                var cut = read == 0 ? filled : Utf8Text.BoundaryBefore(buffer.AsSpan(0, filled));
                if (cut == 0)
                    cut = filled;
                foreach (var message in writer.Write(new OutputItem(stream, buffer[..cut], at)))
                    yield return message;
                at += cut;
                buffer.AsSpan(cut, filled - cut).CopyTo(buffer);
                filled -= cut;
                if (read == 0)
                    break;
            }
        }
        // Erased while it was being sent (its chunks are gone, they read as empty): the rest is named erased, not left out.
        if (at < recorded.Bytes && await evidence.ErasureAsync(tenant, recorded.Sha256, ct) is { } midway)
            yield return Erased(writer, stream, recorded, midway);
    }

    private static SseItem<string> Erased(MessageWriter writer, OutputStream stream, StreamOutput recorded, ContentErasure? erasure) =>
        writer.Message("output_erased", writer.Cursor.Id, JsonSerializer.Serialize(new
        {
            stream = stream == OutputStream.Stdout ? "stdout" : "stderr",
            sha256 = recorded.Sha256,
            bytes = recorded.Bytes,
            erasedAt = erasure?.At,
            reason = erasure?.Reason,
        }, Json));

    private static async Task<(Stream? Content, bool Erased)> OpenAsync(EvidenceStore evidence, string tenant, string sha256, CancellationToken ct)
    {
        try
        {
            return (await evidence.OpenAsync(tenant, sha256, ct), false);
        }
        catch (ContentErasedException)
        {
            return (null, true);
        }
    }

    /// <summary>
    /// For a followed run: publishes from the store whatever the relay has not (events committed before the follow began, a
    /// notification lost, the abandonment another node's sweeper records) until the terminal event ends the feed's entry, and
    /// asks the executor again for output past a gap whose answer was lost.
    /// </summary>
    private static async Task CatchUpAsync(Guid id, IDocumentStore store, RunFeed feed, FeedRelay relay, CancellationToken ct)
    {
        try
        {
            while (feed.Holds(id))
            {
                await feed.CatchUpAsync(store, id, ct);
                relay.Repair(id);
                await Task.Delay(OtherNodePoll, ct);
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
        }
    }

    private static async Task<(IReadOnlyList<JasperFx.Events.IEvent> Events, RunSummary Summary)> LoadAsync(IDocumentStore store, Guid id, long after, CancellationToken ct)
    {
        await using var session = store.QuerySession();
        var events = await session.Events.FetchStreamAsync(id, token: ct);
        var all = events.ToList();
        return (all.Where(e => e.Version > after).ToList(), RunSummary.Fold(id, all.Select(e => e.Data)));
    }

    /// <summary>Turns feed items into messages past the cursor, advancing it; the first message carries `retry`.</summary>
    private sealed class MessageWriter(StreamCursor cursor)
    {
        private bool _retrySent;

        public StreamCursor Cursor { get; private set; } = cursor;

        public IEnumerable<SseItem<string>> Write(FeedItem item)
        {
            switch (item)
            {
                case RecordedItem r when r.Version > Cursor.Version:
                    Cursor = Cursor with { Version = r.Version };
                    yield return Message(r.Type, Cursor.Id, JsonSerializer.Serialize(new { version = r.Version, type = r.Type, at = r.At, data = r.Data }, Json));
                    break;
                case RunningItem r when !Cursor.Running:
                    Cursor = Cursor with { Running = true };
                    yield return Message("sandbox_running", Cursor.Id, JsonSerializer.Serialize(new { containerId = r.ContainerId }, Json));
                    break;
                case OutputItem o:
                    var stdout = o.Stream == OutputStream.Stdout;
                    var delivered = stdout ? Cursor.Stdout : Cursor.Stderr;
                    // Only the part past the cursor goes out; a chunk that starts beyond it would leave a gap, so it waits for the recorded output.
                    var start = delivered - o.Offset;
                    if (start < 0 || start >= o.Bytes.Length)
                        break;
                    var bytes = o.Bytes[(int)start..];
                    Cursor = stdout ? Cursor with { Stdout = delivered + bytes.Length } : Cursor with { Stderr = delivered + bytes.Length };
                    yield return Message(stdout ? "stdout" : "stderr", Cursor.Id, Chunk(bytes));
                    break;
            }
        }

        public SseItem<string> Message(string type, string id, string json)
        {
            var message = new SseItem<string>(json, type) { EventId = id };
            if (!_retrySent)
            {
                _retrySent = true;
                message = message with { ReconnectionInterval = Retry };
            }
            return message;
        }
    }

    // A chunk may end inside a UTF-8 sequence; then it goes as base64 so no byte is lost or altered.
    private static string Chunk(byte[] bytes) => Utf8Text.TryDecode(bytes) is { } text
        ? JsonSerializer.Serialize(new { bytes = bytes.Length, text }, Json)
        : JsonSerializer.Serialize(new { bytes = bytes.Length, base64 = Convert.ToBase64String(bytes) }, Json);
}
