using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Domain.Policies;

public enum RuleKind { Permit, Forbid, Finding }

public enum FindingAction { Record, Deny }

/// <summary>Per-limit ceilings a permit carries; null means "this rule does not cap it".</summary>
public sealed record LimitCaps(
    int? TimeoutMs = null,
    int? MemoryMb = null,
    double? Cpus = null,
    int? Pids = null,
    int? OutputBytes = null,
    int? TmpfsMb = null)
{
    public static readonly LimitCaps None = new();
}

/// <summary>What a rule matches on. Empty lists and nulls match anything.</summary>
public sealed record RuleConditions(
    IReadOnlyList<string> Tenants,
    IReadOnlyList<string> Subjects,
    IReadOnlyList<string> Roles,
    IReadOnlyList<string> NotRoles,
    IReadOnlyList<string> Languages,
    IReadOnlyList<string> Classifications,
    LimitCaps LimitsAbove,
    int? ArgCountAbove,
    int? FileCountAbove,
    long? StdinBytesAbove,
    IReadOnlyList<string>? Runtimes = null)
{
    public static readonly RuleConditions Any = new([], [], [], [], [], [], LimitCaps.None, null, null, null);
}

/// <summary>One rule of a bundle, as written (for display and evaluation); File and Line say where.</summary>
public sealed record PolicyRule(
    string Id,
    RuleKind Kind,
    string Description,
    RuleConditions When,
    LimitCaps Limits,
    string? Pattern,
    FindingAction? Action,
    string File,
    int Line,
    string? RequireIsolation = null);

/// <summary>A file of a bundle: path relative to the bundle directory, SHA-256 of its UTF-8 content, and the content.</summary>
public sealed record PolicyFile(string Path, string Sha256, string Content);

/// <summary>Where something is wrong in a policy or policy test file, and what.</summary>
public sealed record PolicyError(string File, int Line, int Column, string Message)
{
    public override string ToString() => Line > 0 ? $"{File}:{Line}:{Column}: {Message}" : $"{File}: {Message}";
}

public sealed class PolicyLoadException(IReadOnlyList<PolicyError> errors)
    : Exception(FormatMessage(errors))
{
    public IReadOnlyList<PolicyError> Errors { get; } = errors;

    private static string FormatMessage(IReadOnlyList<PolicyError> errors) =>
        $"The policy bundle is invalid ({errors.Count} error(s)):\n" + string.Join("\n", errors);
}

/// <summary>The six run limits by name, so loading, clamping and reporting walk one table.</summary>
internal sealed record LimitField(
    string Name,
    bool IsInteger,
    double Min,
    Func<RequestedLimits, double?> Requested,
    Func<RunLimits, double> Run,
    Func<LimitCaps, double?> Cap)
{
    public static readonly IReadOnlyList<LimitField> All =
    [
        new("timeoutMs", true, LimitFloors.TimeoutMs, l => l.TimeoutMs, l => l.TimeoutMs, c => c.TimeoutMs),
        new("memoryMb", true, LimitFloors.MemoryMb, l => l.MemoryMb, l => l.MemoryMb, c => c.MemoryMb),
        new("cpus", false, LimitFloors.Cpus, l => l.Cpus, l => l.Cpus, c => c.Cpus),
        new("pids", true, LimitFloors.Pids, l => l.Pids, l => l.Pids, c => c.Pids),
        new("outputBytes", true, LimitFloors.OutputBytes, l => l.OutputBytes, l => l.OutputBytes, c => c.OutputBytes),
        new("tmpfsMb", true, LimitFloors.TmpfsMb, l => l.TmpfsMb, l => l.TmpfsMb, c => c.TmpfsMb),
    ];

    public static string Names => string.Join(", ", All.Select(f => f.Name));

    public static RunLimits ToRunLimits(IReadOnlyList<double> v) =>
        new((int)v[0], (int)v[1], v[2], (int)v[3], (int)v[4], (int)v[5]);

    public static LimitCaps ToCaps(IReadOnlyList<double?> v) =>
        new((int?)v[0], (int?)v[1], v[2], (int?)v[3], (int?)v[4], (int?)v[5]);

    public string Format(double value) => IsInteger
        ? ((long)value).ToString(System.Globalization.CultureInfo.InvariantCulture)
        : value.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
