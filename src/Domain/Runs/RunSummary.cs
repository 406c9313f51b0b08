namespace Sandbox.Audited.Domain.Runs;

/// <summary>A run as a client or auditor sees it, folded from its events.</summary>
public sealed record RunSummary(
    Guid RunId,
    string Status,
    string? Subject,
    string? Tenant,
    string? Language,
    string? Classification,
    string? CodeSha256,
    string? Decision,
    string? BundleDigest,
    IReadOnlyList<string> RuleIds,
    IReadOnlyList<string> Reasons,
    IReadOnlyList<string> Findings,
    RunLimits? Limits,
    string? ContainerId,
    string? ImageId,
    bool? FromPool,
    SandboxExited? Exit,
    OutputRecorded? Output,
    string? FailureReason,
    IReadOnlyList<string> Errors,
    long? DurationMs,
    DateTimeOffset? RequestedAt,
    DateTimeOffset? CompletedAt,
    long Version)
{
    public static readonly RunSummary Empty = new(Guid.Empty, RunStatus.Pending, null, null, null, null, null, null, null,
        [], [], [], null, null, null, null, null, null, null, [], null, null, null, 0);

    public bool IsTerminal => CompletedAt is not null;

    public static RunSummary Fold(Guid runId, IEnumerable<object> events) =>
        events.Aggregate(Empty with { RunId = runId }, Apply);

    public static RunSummary Apply(RunSummary s, object @event) => (@event switch
    {
        RunRequested e => s with
        {
            Subject = e.Caller.Subject, Tenant = e.Caller.Tenant, Language = e.Language, Classification = e.Classification,
            CodeSha256 = e.CodeSha256, RequestedAt = e.At,
        },
        RequestRejected e => s with
        {
            Status = RunStatus.Rejected, Subject = e.Caller.Subject, Tenant = e.Caller.Tenant, Language = e.Language,
            CodeSha256 = e.CodeSha256, Errors = e.Errors, RequestedAt = e.At, CompletedAt = e.At,
        },
        PolicyEvaluated e => s with
        {
            Decision = e.Decision, BundleDigest = e.BundleDigest, RuleIds = e.RuleIds, Reasons = e.Reasons,
            Findings = e.Findings, Limits = e.Limits,
            Status = e.Decision == Policies.Decision.Deny ? RunStatus.Denied : s.Status,
            CompletedAt = e.Decision == Policies.Decision.Deny ? e.At : s.CompletedAt,
        },
        SandboxCreated e => s with { ContainerId = e.ContainerId, ImageId = e.ImageId, FromPool = e.FromPool },
        SandboxStarted => s with { Status = s.IsTerminal ? s.Status : RunStatus.Running }, // late events never reopen a run
        SandboxExited e => s with { Exit = e },
        OutputRecorded e => s with { Output = e },
        RunCompleted e => s with { Status = e.Status, DurationMs = e.DurationMs, CompletedAt = e.At },
        RunFailed e => s with { Status = RunStatus.Error, FailureReason = e.Reason, CompletedAt = e.At },
        RunAbandoned e => s with { Status = RunStatus.Abandoned, FailureReason = e.Reason, CompletedAt = e.At },
        _ => s,
    }) with { Version = s.Version + 1 };
}
