using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Sandbox.Audited.Client;

// The API's JSON shapes as a client sees them (camelCase on the wire). Members the service may add later are
// ignored when reading, so an older client keeps working against a newer service.

/// <summary>A run to start. Only <see cref="Language"/> and <see cref="Code"/> are required.</summary>
public sealed record RunRequest(string Language, string Code)
{
    /// <summary>A runtime id from GET /v1/runtimes (default: the language's lean runtime).</summary>
    public string? Runtime { get; init; }

    public string? Stdin { get; init; }

    public IReadOnlyList<string>? Args { get; init; }

    public IReadOnlyList<InputFile>? Files { get; init; }

    public RequestedLimits? Limits { get; init; }

    /// <summary>The data classification policy decides on (for example public, internal, restricted).</summary>
    public string? Classification { get; init; }

    /// <summary>false: answer 202 at once and run in the background (stream or poll it).</summary>
    public bool? Wait { get; init; }

    public string? CallbackUrl { get; init; }
}

/// <summary>A file placed in the run's working directory; <see cref="Encoding"/> "base64" for binary content.</summary>
public sealed record InputFile(string Name, string Content)
{
    public string? Encoding { get; init; }

    public static InputFile FromBytes(string name, byte[] bytes) => IsText(bytes)
        ? new InputFile(name, new UTF8Encoding(false, true).GetString(bytes))
        : new InputFile(name, Convert.ToBase64String(bytes)) { Encoding = "base64" };

    private static bool IsText(byte[] bytes)
    {
        if (bytes.AsSpan().IndexOf((byte)0) >= 0)
            return false;
        try
        {
            _ = new UTF8Encoding(false, true).GetString(bytes);
            return true;
        }
        catch (DecoderFallbackException)
        {
            return false;
        }
    }
}

public sealed record RequestedLimits
{
    public int? TimeoutMs { get; init; }
    public int? MemoryMb { get; init; }
    public decimal? Cpus { get; init; }
    public int? Pids { get; init; }
    public int? OutputBytes { get; init; }
    public int? TmpfsMb { get; init; }
}

/// <summary>A run's summary and result (GET /v1/runs/{id}, or the answer to POST /v1/runs).</summary>
public sealed record Run(
    Guid RunId,
    string Status,
    string? Subject,
    string? Tenant,
    string? Language,
    string? Classification,
    string? CodeSha256,
    int? ExitCode,
    int? Signal,
    bool TimedOut,
    bool OomKilled,
    bool PidsLimitHit,
    RunOutput? Stdout,
    RunOutput? Stderr,
    long? DurationMs,
    string? Reason,
    IReadOnlyList<string>? Errors,
    DateTimeOffset? RequestedAt,
    DateTimeOffset? CompletedAt)
{
    /// <summary>True once the run has its terminal event; a run still executing (or still being recorded) is not.</summary>
    [JsonIgnore]
    public bool IsFinished => Status is not ("pending" or "running" or "recording" or "queued");
}

/// <summary>One output stream as recorded: the (capped) content, its encoding, and the SHA-256 of the exact bytes.</summary>
public sealed record RunOutput(string? Content, string? Encoding, string Sha256, long Bytes, long ProducedBytes, bool Truncated)
{
    public byte[] ToBytes() => Content is null ? []
        : Encoding == "base64" ? Convert.FromBase64String(Content) : System.Text.Encoding.UTF8.GetBytes(Content);
}

/// <summary>One recorded event with its place in the hash chain.</summary>
public sealed record RecordedEvent(long Sequence, long Version, string Type, DateTimeOffset Timestamp, string? Hash, string? PrevHash, JsonElement Data);

/// <summary>One server-sent event of GET /v1/runs/{id}/stream.</summary>
public sealed record StreamMessage(string Event, string? Id, JsonElement Data)
{
    public bool IsStdout => Event == "stdout";

    public bool IsStderr => Event == "stderr";

    /// <summary>The last message of a run's stream, carrying its status and exit code.</summary>
    public bool IsEnd => Event == "end";

    /// <summary>The bytes of an output chunk (sent as text, or as base64 when a chunk is not valid UTF-8).</summary>
    public byte[] OutputBytes() =>
        Data.TryGetProperty("text", out var text) ? Encoding.UTF8.GetBytes(text.GetString() ?? "")
        : Data.TryGetProperty("base64", out var b64) ? Convert.FromBase64String(b64.GetString() ?? "")
        : [];
}

/// <summary>A file the program left under out/: stored (downloadable by <see cref="Href"/>), or skipped/exceeded with a reason.</summary>
public sealed record Artifact(string Name, long Bytes, string? Sha256, string? MediaType, string Status, string? Reason, string? Href)
{
    public bool IsStored => Status == "stored";
}
