using System.Text.Json.Serialization;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Api.Runs;

/// <summary>The body of POST /v1/runs. Unknown members are refused, so a typo never silently drops a setting.</summary>
[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Disallow)]
public sealed record RunRequestBody(
    string? Language,
    string? Code,
    string? Stdin = null,
    IReadOnlyList<string>? Args = null,
    IReadOnlyList<RunFile>? Files = null,
    RequestedLimits? Limits = null,
    string? Classification = null,
    bool? Wait = null,
    string? CallbackUrl = null,
    string? Runtime = null,
    string? Isolation = null);

/// <summary>
/// One output stream as answered. Encoding: "utf8" (Content is the text) or "base64" (not valid UTF-8, or it holds NUL);
/// without content: "erased" (removed from the evidence store), "missing" (not in it), or "unavailable" (a "recording"
/// answer while the store is away: GET the run once its record is committed).
/// </summary>
public sealed record OutputView(string Content, string Encoding, string Sha256, long Bytes, long ProducedBytes, bool Truncated);

public sealed record PolicyView(string? Decision, string? BundleDigest, IReadOnlyList<string> RuleIds, IReadOnlyList<string> Reasons, IReadOnlyList<string> Findings);

public sealed record SandboxView(string? ContainerId, string? ImageId, bool? FromPool);

/// <summary>A run as the API returns it.</summary>
public sealed record RunView(
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
    OutputView? Stdout,
    OutputView? Stderr,
    long? DurationMs,
    double? WallMs,
    long? PeakMemoryKb,
    RunLimits? Limits,
    PolicyView Policy,
    SandboxView Sandbox,
    string? Reason,
    IReadOnlyList<string> Errors,
    DateTimeOffset? RequestedAt,
    DateTimeOffset? CompletedAt)
{
    public static RunView From(RunSummary s) => new(
        s.RunId, s.Status, s.Subject, s.Tenant, s.Language, s.Classification, s.CodeSha256,
        s.Exit?.ExitCode, s.Exit?.Signal, s.Exit?.TimedOut ?? false, s.Exit?.OomKilled ?? false, s.Exit?.PidsLimitHit ?? false,
        s.Output is null ? null : OutputOf(s.Output.Stdout),
        s.Output is null ? null : OutputOf(s.Output.Stderr),
        s.DurationMs, s.Exit is null ? null : s.Exit.WallUs / 1000.0, s.Exit?.PeakMemoryKb, s.Limits,
        new PolicyView(s.Decision, s.BundleDigest, s.RuleIds, s.Reasons, s.Findings),
        new SandboxView(s.ContainerId, s.ImageId, s.FromPool),
        s.FailureReason ?? (s.Status == RunStatus.Denied ? string.Join(" ", s.Reasons) : null), s.Errors, s.RequestedAt, s.CompletedAt);

    /// <summary>An output as answered; an empty stream named only by its digest is answered as the empty text it is.</summary>
    public static OutputView OutputOf(StreamOutput o) =>
        new(o.Content, o is { Bytes: 0, Encoding: StreamOutput.StoredEncoding } ? "utf8" : o.Encoding, o.Sha256, o.Bytes, o.ProducedBytes, o.Truncated);
}

/// <summary>One stored event with its place in the chain.</summary>
public sealed record EventView(long Sequence, long Version, string Type, DateTimeOffset Timestamp, string? Hash, string? PrevHash, object Data);
