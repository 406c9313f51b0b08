using System.Text;
using System.Text.Json;
using Marten;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Executor.Sandboxes;

namespace Sandbox.Audited.Api.Streaming;

/// <summary>
/// GET /v1/runs/{id}/stream: server-sent events. First what is recorded (from PostgreSQL), then the output so
/// far, then lifecycle steps and output chunks live as they happen, and a final `end` event with the status.
/// A finished run is replayed from its events and the stream closes.
/// </summary>
public static class StreamEndpoints
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private static readonly TimeSpan OtherNodePoll = TimeSpan.FromMilliseconds(250);

    public static void MapRunStream(this IEndpointRouteBuilder app) =>
        app.MapGet("/v1/runs/{id:guid}/stream", Stream)
            .RequireAuthorization()
            .WithTags("Runs")
            .Produces(200, contentType: "text/event-stream")
            .ProducesProblem(404);

    public static async Task<IResult> Stream(Guid id, HttpContext http, IDocumentStore store, RunFeed feed, CancellationToken ct)
    {
        // Subscribe before reading the store, so that nothing falls between the replay and the live items.
        using var subscription = feed.Subscribe(id);
        var (events, summary) = await LoadAsync(store, id, 0, ct);
        var caller = http.User.ToCaller();
        if (events.Count == 0 || caller.Tenant != summary.Tenant || caller.Subject != summary.Subject)
            return TypedResults.Problem(Problems.Create(404, Problems.NotFound, "Run not found", $"No run {id} of yours is visible to you (only the run's owner may stream it)."));

        http.Response.ContentType = "text/event-stream";
        http.Response.Headers.CacheControl = "no-cache";
        http.Response.Headers["X-Accel-Buffering"] = "no";
        await http.Response.Body.FlushAsync(ct);

        long last = 0;
        foreach (var e in events)
            last = await WriteRecordedAsync(http, new RecordedItem(e.Version, e.EventTypeName, e.Timestamp, e.Data), ct);

        if (subscription is not null)
        {
            foreach (var item in subscription.SoFar)
                await WriteAsync(http, item, ct);
            await foreach (var item in subscription.Live.ReadAllAsync(ct))
            {
                if (item is RecordedItem recorded && recorded.Version <= last)
                    continue;
                await WriteAsync(http, item, ct);
                if (item is RecordedItem r)
                {
                    last = r.Version;
                    summary = RunSummary.Apply(summary, r.Data);
                }
            }
        }
        else
        {
            // Not in flight here: finished, or running on another node — follow the store until the terminal event.
            while (!summary.IsTerminal)
            {
                await Task.Delay(OtherNodePoll, ct);
                var (more, _) = await LoadAsync(store, id, last, ct);
                foreach (var e in more)
                {
                    last = await WriteRecordedAsync(http, new RecordedItem(e.Version, e.EventTypeName, e.Timestamp, e.Data), ct);
                    summary = RunSummary.Apply(summary, e.Data);
                }
            }
            if (summary.Output is { } output)
            {
                await WriteOutputAsync(http, "stdout", output.Stdout, ct);
                await WriteOutputAsync(http, "stderr", output.Stderr, ct);
            }
        }

        await WriteEventAsync(http, "end", null, JsonSerializer.Serialize(new { runId = id, status = summary.Status, exitCode = summary.Exit?.ExitCode }, Json), ct);
        return Results.Empty;
    }

    private static async Task<(IReadOnlyList<JasperFx.Events.IEvent> Events, RunSummary Summary)> LoadAsync(IDocumentStore store, Guid id, long after, CancellationToken ct)
    {
        await using var session = store.QuerySession();
        var events = await session.Events.FetchStreamAsync(id, token: ct);
        var all = events.ToList();
        return (all.Where(e => e.Version > after).ToList(), RunSummary.Fold(id, all.Select(e => e.Data)));
    }

    private static async Task<long> WriteRecordedAsync(HttpContext http, RecordedItem item, CancellationToken ct)
    {
        await WriteAsync(http, item, ct);
        return item.Version;
    }

    private static Task WriteAsync(HttpContext http, FeedItem item, CancellationToken ct) => item switch
    {
        RecordedItem r => WriteEventAsync(http, r.Type, r.Version.ToString(System.Globalization.CultureInfo.InvariantCulture),
            JsonSerializer.Serialize(new { version = r.Version, type = r.Type, at = r.At, data = r.Data }, Json), ct),
        RunningItem r => WriteEventAsync(http, "sandbox_running", null, JsonSerializer.Serialize(new { containerId = r.ContainerId }, Json), ct),
        OutputItem o => WriteEventAsync(http, o.Stream == OutputStream.Stdout ? "stdout" : "stderr", null, Chunk(o.Bytes), ct),
        _ => Task.CompletedTask,
    };

    private static Task WriteOutputAsync(HttpContext http, string name, StreamOutput output, CancellationToken ct) =>
        output.Bytes == 0 ? Task.CompletedTask
            : WriteEventAsync(http, name, null, output.Encoding == "utf8" ? Chunk(Encoding.UTF8.GetBytes(output.Content)) : Chunk(Convert.FromBase64String(output.Content)), ct);

    // A chunk may end inside a UTF-8 sequence; then it goes as base64 so no byte is lost or altered.
    private static string Chunk(byte[] bytes)
    {
        try
        {
            var text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
            return JsonSerializer.Serialize(new { bytes = bytes.Length, text }, Json);
        }
        catch (DecoderFallbackException)
        {
            return JsonSerializer.Serialize(new { bytes = bytes.Length, base64 = Convert.ToBase64String(bytes) }, Json);
        }
    }

    private static async Task WriteEventAsync(HttpContext http, string name, string? id, string json, CancellationToken ct)
    {
        var frame = new StringBuilder();
        frame.Append("event: ").Append(name).Append('\n');
        if (id is not null)
            frame.Append("id: ").Append(id).Append('\n');
        frame.Append("data: ").Append(json).Append("\n\n");
        await http.Response.WriteAsync(frame.ToString(), ct);
        await http.Response.Body.FlushAsync(ct);
    }
}
