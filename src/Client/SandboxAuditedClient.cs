using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Net.ServerSentEvents;
using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Sandbox.Audited.Client;

/// <summary>
/// The Sandbox.Audited API over one <see cref="HttpClient"/> whose BaseAddress is the service's root URL.
/// Every failure the service reports as a problem document is thrown as a <see cref="ProblemException"/>.
/// </summary>
public sealed class SandboxAuditedClient(HttpClient http, string? token = null)
{
    internal static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>Starts a run. With Wait=false (or a run still being recorded) the answer comes at once and the run goes on.</summary>
    public async Task<Run> StartRunAsync(RunRequest request, string? idempotencyKey = null, CancellationToken ct = default)
    {
        using var message = Request(HttpMethod.Post, "v1/runs");
        message.Content = JsonContent.Create(request, options: Json);
        if (idempotencyKey is not null)
            message.Headers.Add("Idempotency-Key", idempotencyKey);
        return await SendAsync<Run>(message, ct);
    }

    public Task<Run> GetRunAsync(Guid runId, CancellationToken ct = default) =>
        GetAsync<Run>($"v1/runs/{runId}", ct);

    /// <summary>The run's recorded history, oldest first, each event with its hash and the previous one's.</summary>
    public Task<IReadOnlyList<RecordedEvent>> GetEventsAsync(Guid runId, CancellationToken ct = default) =>
        GetAsync<IReadOnlyList<RecordedEvent>>($"v1/runs/{runId}/events", ct);

    /// <summary>Polls until the run is finished (its terminal event is recorded), at most <paramref name="timeout"/>.</summary>
    public async Task<Run> WaitAsync(Guid runId, TimeSpan timeout, CancellationToken ct = default)
    {
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(ct);
        limit.CancelAfter(timeout);
        while (true)
        {
            var run = await GetRunAsync(runId, limit.Token);
            if (run.IsFinished)
                return run;
            await Task.Delay(TimeSpan.FromMilliseconds(200), limit.Token);
        }
    }

    /// <summary>
    /// The run's server-sent events: its recorded steps, output chunks as they are produced, then "end". Resumes after
    /// <paramref name="lastEventId"/> when given (the id of the last message a previous stream delivered).
    /// </summary>
    public async IAsyncEnumerable<StreamMessage> StreamAsync(Guid runId, string? lastEventId = null, [EnumeratorCancellation] CancellationToken ct = default)
    {
        using var message = Request(HttpMethod.Get, $"v1/runs/{runId}/stream");
        message.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        if (lastEventId is not null)
            message.Headers.Add("Last-Event-ID", lastEventId);
        using var response = await http.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, ct);
        if (response.StatusCode == HttpStatusCode.NoContent)
            yield break; // the run had already ended after lastEventId: nothing more will come
        await ThrowIfProblemAsync(response, ct);
        await using var body = await response.Content.ReadAsStreamAsync(ct);
        await foreach (var item in SseParser.Create(body).EnumerateAsync(ct))
        {
            var data = string.IsNullOrEmpty(item.Data) ? default : JsonDocument.Parse(item.Data).RootElement.Clone();
            var parsed = new StreamMessage(item.EventType, item.EventId, data);
            yield return parsed;
            if (parsed.IsEnd)
                yield break;
        }
    }

    /// <summary>What the run's program left under out/, as recorded: stored files with their digests, and what was skipped.</summary>
    public Task<IReadOnlyList<Artifact>> GetArtifactsAsync(Guid runId, CancellationToken ct = default) =>
        GetAsync<IReadOnlyList<Artifact>>($"v1/runs/{runId}/artifacts", ct);

    /// <summary>
    /// Downloads a stored artifact into <paramref name="destination"/> and checks it against the digest the service sent
    /// (Repr-Digest, RFC 9530) and the one it recorded; returns the SHA-256 (hex). A mismatch throws InvalidDataException.
    /// </summary>
    public async Task<string> DownloadArtifactAsync(Artifact artifact, Stream destination, CancellationToken ct = default)
    {
        if (!artifact.IsStored || artifact.Href is null)
            throw new InvalidOperationException($"Artifact '{artifact.Name}' was not stored ({artifact.Status}: {artifact.Reason}).");
        using var message = Request(HttpMethod.Get, artifact.Href.TrimStart('/'));
        using var response = await http.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, ct);
        await ThrowIfProblemAsync(response, ct);
        using var sha = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        await using (var body = await response.Content.ReadAsStreamAsync(ct))
        {
            var buffer = new byte[81920];
            int read;
            while ((read = await body.ReadAsync(buffer, ct)) > 0)
            {
                sha.AppendData(buffer, 0, read);
                await destination.WriteAsync(buffer.AsMemory(0, read), ct);
            }
        }
        var digest = sha.GetHashAndReset();
        var hex = Convert.ToHexStringLower(digest);
        var sent = response.Headers.TryGetValues("Repr-Digest", out var values) ? values.FirstOrDefault() : null;
        if (sent != $"sha-256=:{Convert.ToBase64String(digest)}:" || (artifact.Sha256 is not null && artifact.Sha256 != hex))
            throw new InvalidDataException($"Artifact '{artifact.Name}' does not match its digest (received sha256 {hex}, Repr-Digest {sent ?? "none"}, recorded {artifact.Sha256}).");
        return hex;
    }

    /// <summary>Audit export (auditor role): NDJSON or CSV of the tenant's events, copied to <paramref name="destination"/>.</summary>
    public async Task ExportAsync(Stream destination, string format = "ndjson", string? query = null, CancellationToken ct = default)
    {
        var path = $"v1/audit/export?format={Uri.EscapeDataString(format)}" + (string.IsNullOrEmpty(query) ? "" : "&" + query.TrimStart('?', '&'));
        using var message = Request(HttpMethod.Get, path);
        using var response = await http.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, ct);
        await ThrowIfProblemAsync(response, ct);
        await response.Content.CopyToAsync(destination, ct);
    }

    /// <summary>The service's own verification of a run's hash chain (auditor role).</summary>
    public Task<JsonElement> VerifyRunAsync(Guid runId, CancellationToken ct = default) =>
        GetAsync<JsonElement>($"v1/audit/verify?runId={runId}", ct);

    /// <summary>Available runtimes (languages, images and their digests).</summary>
    public Task<JsonElement> GetRuntimesAsync(CancellationToken ct = default) =>
        GetAsync<JsonElement>("v1/runtimes", ct);

    private async Task<T> GetAsync<T>(string path, CancellationToken ct)
    {
        using var message = Request(HttpMethod.Get, path);
        return await SendAsync<T>(message, ct);
    }

    private async Task<T> SendAsync<T>(HttpRequestMessage message, CancellationToken ct)
    {
        using var response = await http.SendAsync(message, ct);
        await ThrowIfProblemAsync(response, ct);
        return await response.Content.ReadFromJsonAsync<T>(Json, ct)
            ?? throw new InvalidOperationException($"The service answered {(int)response.StatusCode} with an empty body.");
    }

    private HttpRequestMessage Request(HttpMethod method, string path)
    {
        var message = new HttpRequestMessage(method, path);
        if (token is not null)
            message.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return message;
    }

    private static async Task ThrowIfProblemAsync(HttpResponseMessage response, CancellationToken ct)
    {
        if (response.IsSuccessStatusCode)
            return;
        var text = await response.Content.ReadAsStringAsync(ct);
        JsonElement? body = null;
        try
        {
            if (text.Length > 0)
                body = JsonDocument.Parse(text).RootElement.Clone();
        }
        catch (JsonException)
        {
        }
        string? Member(string name) => body is { ValueKind: JsonValueKind.Object } b && b.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
        var errors = body is { ValueKind: JsonValueKind.Object } o && o.TryGetProperty("errors", out var e) && e.ValueKind == JsonValueKind.Array
            ? e.EnumerateArray().Where(x => x.ValueKind == JsonValueKind.String).Select(x => x.GetString()!).ToList()
            : [];
        Guid? runId = Guid.TryParse(Member("runId"), out var id) ? id : null;
        var retryAfter = response.Headers.RetryAfter switch
        {
            { Delta: { } delta } => delta,
            { Date: { } date } => date - DateTimeOffset.UtcNow,
            _ => (TimeSpan?)null,
        };
        throw new ProblemException(response.StatusCode, Member("type"), Member("title") ?? response.ReasonPhrase,
            Member("detail") ?? (body is null && text.Length > 0 ? text[..Math.Min(text.Length, 500)] : null), runId, errors, retryAfter, body);
    }
}
