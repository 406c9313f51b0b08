using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Domain.Policies;

/// <summary>Everything a policy may look at: who asks, what they want to run, and how (Runtime null: the language's lean runtime; Isolation null: standard).</summary>
public sealed record PolicyInput(
    Caller Caller,
    string Language,
    string Classification,
    RequestedLimits Limits,
    string Code,
    int ArgCount,
    int FileCount,
    long StdinBytes,
    string? Runtime = null,
    string? Isolation = null);

public static class Decision
{
    public const string Allow = "allow";
    public const string Deny = "deny";
}

/// <summary>An explained decision: the deciding rule ids, findings, effective limits, granted runtime and isolation class, and reasons.</summary>
public sealed record PolicyDecision(
    string Decision,
    string BundleDigest,
    IReadOnlyList<string> RuleIds,
    RunLimits Limits,
    IReadOnlyList<string> Findings,
    IReadOnlyList<string> Reasons,
    string? Runtime = null,
    string? Isolation = null)
{
    public bool Allowed => Decision == Policies.Decision.Allow;
}

public static class Classification
{
    public static readonly IReadOnlyList<string> All = ["public", "internal", "confidential", "restricted"];
    public const string Default = "internal";
}
