using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http.Metadata;
using Microsoft.Extensions.Options;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Domain.Text;

namespace Sandbox.Audited.Api.Runs;

/// <summary>
/// A run as the API returns it (the JSON of RunView, whole output included), written as it is read: an output stream kept
/// in the evidence store goes from the store into the answer a chunk at a time, so megabytes of output never sit in the
/// service's memory as bytes, text and JSON at once. The store is read twice per stream: once to learn whether the
/// output is text (valid UTF-8 without NUL) or goes as base64, once to write it.
/// </summary>
/// <remarks>
/// justRun: the answer to the request that ran it (its small outputs come from memory, not stored). An output whose recorded
/// preview is whole (an empty stream; events of earlier versions) was stored moments ago and is answered without asking the
/// store whether it was erased since.
/// </remarks>
public sealed partial class RunAnswer(RunSummary run, EvidenceStore evidence, int statusCode = StatusCodes.Status200OK, bool justRun = false)
    : IResult, IStatusCodeHttpResult, IEndpointMetadataProvider
{
    // A multiple of 3, so that base64 segments need no carry between them.
    private const int Segment = 48 * 1024;

    // Stored outputs up to this size are read whole in one query and answered as a value; larger ones are streamed.
    private const int ReadWholeBytes = 64 * 1024;

    /// <summary>The encoding of a stored output a "recording" answer cannot carry (the store is away); GET the run once committed.</summary>
    public const string Unavailable = "unavailable";

    public int? StatusCode => statusCode;

    public RunSummary Run => run;

    public static void PopulateMetadata(MethodInfo method, EndpointBuilder builder) =>
        builder.Metadata.Add(new ProducesResponseTypeMetadata(StatusCodes.Status200OK, typeof(RunView), ["application/json"]));

    public async Task ExecuteAsync(HttpContext http)
    {
        var options = http.RequestServices.GetRequiredService<IOptions<Microsoft.AspNetCore.Http.Json.JsonOptions>>().Value.SerializerOptions;
        var ct = http.RequestAborted;
        // Everything but the stored streams' contents is small: serialized as usual, then written around the streamed parts.
        var view = JsonSerializer.SerializeToNode(RunView.From(run), options)!.AsObject();
        var streamed = new Dictionary<string, (StreamOutput Output, string Encoding)>(StringComparer.Ordinal);
        if (run.Output is { } output && run.Tenant is { } tenant)
        {
            (string Name, StreamOutput Stream)[] stored = [.. new[] { ("stdout", output.Stdout), ("stderr", output.Stderr) }.Where(s => s.Item2.Stored)];
            if (run.Status == RunStatus.Recording)
            {
                // Given while PostgreSQL is away: never a store read that could break the answer after its status line went
                // out. Outputs not in the answer already are named by digest and size; the committed record has them.
                foreach (var (name, stream) in stored.Where(s => !PreviewIsWhole(s.Stream)))
                    streamed[name] = (stream, Unavailable);
            }
            else
            {
                var whole = stored.Where(s => PreviewIsWhole(s.Stream)).Select(s => s.Name).ToHashSet(StringComparer.Ordinal);
                // Previews that are whole need only "was it erased?": one query for both streams, none for the run's own answer.
                Dictionary<string, string?> erasures = whole.Count == 0 || justRun ? []
                    : await ErasuresAsync(tenant, [.. stored.Where(s => whole.Contains(s.Name)).Select(s => s.Stream.Sha256)], ct);
                foreach (var (name, stream) in stored)
                {
                    if (whole.Contains(name))
                    {
                        if (erasures.GetValueOrDefault(stream.Sha256) is { } gone)
                            streamed[name] = (stream, gone);
                    }
                    // Small outputs are read once, whole; larger ones are streamed from the store into the answer. A store that
                    // cannot be read fails the answer here, before its status line (503), never an answer without the output;
                    // except to the request that ran it: the run is committed, and an error without its id could make a client
                    // run it again, so that answer names the output "unavailable" (GET the run for it).
                    else
                    {
                        try
                        {
                            if (stream.Bytes <= ReadWholeBytes)
                                view[name] = JsonSerializer.SerializeToNode(RunView.OutputOf(await RunContent.ResolveAsync(evidence, tenant, stream, ct)), options);
                            else
                                streamed[name] = (stream, await EncodingOfAsync(tenant, stream.Sha256, ct));
                        }
                        catch (Exception e) when (justRun && !ct.IsCancellationRequested)
                        {
                            LogReadBackFailed(http.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger<RunAnswer>(), e, run.RunId, name, stream.Sha256);
                            streamed[name] = (stream, Unavailable);
                        }
                    }
                }
            }
        }

        http.Response.StatusCode = statusCode;
        http.Response.ContentType = "application/json; charset=utf-8";
        await using var writer = new Utf8JsonWriter(http.Response.Body, new JsonWriterOptions { Encoder = options.Encoder, Indented = options.WriteIndented });
        writer.WriteStartObject();
        foreach (var (name, value) in view)
        {
            writer.WritePropertyName(name);
            if (streamed.TryGetValue(name, out var stream) && value is JsonObject fields)
                await WriteStreamAsync(writer, fields, run.Tenant!, stream.Output, stream.Encoding, ct);
            else if (value is null)
                writer.WriteNullValue();
            else
                value.WriteTo(writer, options);
        }
        writer.WriteEndObject();
        await writer.FlushAsync(ct);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Run {RunId}: its {Stream} (sha256 {Sha256}) could not be read back from the evidence store for the "
        + "answer to the request that ran it; answered \"unavailable\" (GET the run for it)")]
    private static partial void LogReadBackFailed(ILogger logger, Exception e, Guid runId, string stream, string sha256);

    /// <summary>
    /// Events of earlier versions hold a 1 KiB preview of a stored output, and most outputs fit it: then the preview is the
    /// whole stream, in the encoding Describe would give it, and the answer asks the store only whether it was erased (one
    /// short query instead of reading the content twice). Newer events hold no content: only an empty stream is whole.
    /// </summary>
    public static bool PreviewIsWhole(StreamOutput stream) =>
        stream.Bytes == 0 || stream.Bytes <= StreamOutput.PreviewBytes && stream.Encoding switch
        {
            "utf8" => System.Text.Encoding.UTF8.GetByteCount(stream.Content) == stream.Bytes,
            "base64" => Convert.FromBase64String(stream.Content).Length == stream.Bytes,
            _ => false,
        };

    /// <summary>For outputs whose previews are whole: "erased" or "missing" for each the store no longer has (the others' previews are answered).</summary>
    private async Task<Dictionary<string, string?>> ErasuresAsync(string tenant, IReadOnlyList<string> sha256s, CancellationToken ct)
    {
        try
        {
            var states = await evidence.StatesAsync(tenant, sha256s, ct);
            return sha256s.Distinct().ToDictionary(sha => sha, sha => states.GetValueOrDefault(sha) switch
            {
                ContentState.Erased => "erased",
                ContentState.Missing => "missing",
                _ => (string?)null,
            });
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            return [];
        }
    }

    /// <summary>
    /// "utf8" or "base64" as RunOrchestrator.Describe decides it for the whole stream; "erased" or "missing" without content.
    /// Throws when the store cannot be read (before the answer's status line: the client gets a 503, never a partial answer).
    /// </summary>
    private async Task<string> EncodingOfAsync(string tenant, string sha256, CancellationToken ct)
    {
        Stream? content;
        try
        {
            content = await evidence.OpenAsync(tenant, sha256, ct);
        }
        catch (ContentErasedException)
        {
            return "erased";
        }
        if (content is null)
            return "missing";
        await using (content)
        {
            var check = new Utf8Text.OutputCheck();
            var buffer = new byte[Segment];
            int read;
            while ((read = await content.ReadAsync(buffer, ct)) > 0)
                check.Append(buffer.AsSpan(0, read));
            return check.End() ? "utf8" : "base64";
        }
    }

    private async Task WriteStreamAsync(Utf8JsonWriter writer, JsonObject fields, string tenant, StreamOutput output, string encoding, CancellationToken ct)
    {
        writer.WriteStartObject();
        foreach (var (name, value) in fields)
        {
            writer.WritePropertyName(name);
            switch (name)
            {
                case "encoding":
                    writer.WriteStringValue(encoding);
                    break;
                case "content" when encoding is "utf8" or "base64":
                    await WriteContentAsync(writer, tenant, output.Sha256, output.Bytes, encoding == "utf8", ct);
                    break;
                case "content":
                    writer.WriteStringValue("");
                    break;
                default:
                    if (value is null)
                        writer.WriteNullValue();
                    else
                        value.WriteTo(writer);
                    break;
            }
        }
        writer.WriteEndObject();
    }

    private async Task WriteContentAsync(Utf8JsonWriter writer, string tenant, string sha256, long bytes, bool text, CancellationToken ct)
    {
        await using var content = await evidence.OpenAsync(tenant, sha256, ct)
            ?? throw new InvalidOperationException($"Stored output {sha256} disappeared while it was answered.");
        var buffer = new byte[Segment];
        long sent = 0;
        while (true)
        {
            var read = await content.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false, ct);
            var last = read < buffer.Length;
            sent += read;
            // Erased (or lost) while it was answered: the answer is broken off, never closed as if the output were whole.
            if (last && sent != bytes)
                throw new InvalidDataException($"Stored output {sha256} ended after {sent} of its {bytes} bytes while it was answered; the answer was broken off.");
            if (text)
                writer.WriteStringValueSegment(buffer.AsSpan(0, read), last);
            else
                writer.WriteBase64StringSegment(buffer.AsSpan(0, read), last);
            await writer.FlushAsync(ct);
            if (last)
                return;
        }
    }
}
