using System.Text.Json.Serialization;
using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Api.Policies;

/// <summary>A decision as recorded in PolicyEvaluated (without the run id and time).</summary>
public sealed record DecisionView(
    string Decision,
    string BundleDigest,
    IReadOnlyList<string> RuleIds,
    RunLimits Limits,
    IReadOnlyList<string> Findings,
    IReadOnlyList<string> Reasons,
    string? Runtime,
    string? Isolation)
{
    public static DecisionView From(PolicyDecision d) => new(d.Decision, d.BundleDigest, d.RuleIds, d.Limits, d.Findings, d.Reasons, d.Runtime, d.Isolation);
}

public sealed record PolicyFileView(string Path, string Sha256);

public sealed record PolicyRuleView(
    string Id,
    string Kind,
    string Description,
    RuleConditions Conditions,
    LimitCaps Limits,
    string? Pattern,
    string? Action,
    string File,
    int Line)
{
    public static PolicyRuleView From(PolicyRule r) => new(
        r.Id, r.Kind.ToString().ToLowerInvariant(), r.Description, r.When, r.Limits, r.Pattern,
        r.Action?.ToString().ToLowerInvariant(), r.File, r.Line);
}

/// <summary>GET /v1/policies: the bundle runs are decided with now.</summary>
public sealed record ActivePolicyView(
    string Digest,
    IReadOnlyList<PolicyFileView> Files,
    IReadOnlyList<PolicyRuleView> Rules,
    RunLimits Defaults,
    RunLimits Ceilings,
    DateTimeOffset ActivatedAt,
    string Trigger);

/// <summary>GET /v1/policies/bundles/{digest}: a stored bundle's exact files.</summary>
public sealed record StoredBundleView(string Digest, IReadOnlyList<PolicyFile> Files, DateTimeOffset FirstSeenAt);

/// <summary>
/// The body of POST /v1/policies/evaluate. Subject, tenant and roles default to the caller's own; digest picks a
/// stored bundle instead of the active one.
/// </summary>
[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Disallow)]
public sealed record EvaluateRequest(
    string? Language,
    string? Subject = null,
    string? Tenant = null,
    IReadOnlyList<string>? Roles = null,
    string? Classification = null,
    RequestedLimits? Limits = null,
    string? Code = null,
    int? ArgCount = null,
    int? FileCount = null,
    long? StdinBytes = null,
    string? Digest = null,
    string? Runtime = null,
    string? Isolation = null);

/// <summary>POST /v1/policies/reload: what the reload did.</summary>
public sealed record ReloadView(string Outcome, string ActiveDigest, string? PreviousDigest);

/// <summary>GET /v1/audit/runs/{id}/replay: the recorded decision against the same input re-decided under the same bundle.</summary>
public sealed record ReplayView(Guid RunId, string BundleDigest, DecisionView Recorded, DecisionView Replayed, bool Same, IReadOnlyList<string> Differences);
