using System.Globalization;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Domain.Policies;

/// <summary>Re-deciding a recorded run: its input rebuilt from RunRequested, its outcome compared with PolicyEvaluated.</summary>
public static class PolicyReplay
{
    /// <summary>Every PolicyInput field is recorded in RunRequested (args and files in full, stdin by size).</summary>
    /// <summary>Code is the request's own (runs recorded before the evidence store) or the stored code its CodeSha256 names.</summary>
    public static PolicyInput InputOf(RunRequested request, string? storedCode = null) => new(
        request.Caller, request.Language, request.Classification, request.Limits, request.Code ?? storedCode ?? "",
        request.Args.Count, request.Files.Count, request.StdinBytes, request.Runtime, request.Isolation);

    public static PolicyDecision DecisionOf(PolicyEvaluated evaluated) => new(
        evaluated.Decision, evaluated.BundleDigest, evaluated.RuleIds, evaluated.Limits, evaluated.Findings, evaluated.Reasons,
        evaluated.Runtime, evaluated.Isolation);

    /// <summary>What differs between two decisions, one line per field; empty when they are the same.</summary>
    public static IReadOnlyList<string> Differences(PolicyDecision recorded, PolicyDecision replayed)
    {
        var differences = new List<string>();
        Compare(differences, "decision", recorded.Decision, replayed.Decision);
        Compare(differences, "bundleDigest", recorded.BundleDigest, replayed.BundleDigest);
        CompareList(differences, "ruleIds", recorded.RuleIds, replayed.RuleIds);
        CompareList(differences, "findings", recorded.Findings, replayed.Findings);
        CompareList(differences, "reasons", recorded.Reasons, replayed.Reasons);
        // Recorded before runtimes existed: no runtime or class to compare.
        if (recorded.Isolation is not null)
        {
            Compare(differences, "runtime", recorded.Runtime ?? "", replayed.Runtime ?? "");
            Compare(differences, "isolation", recorded.Isolation, replayed.Isolation ?? "");
        }
        foreach (var field in LimitField.All)
            Compare(differences, "limits." + field.Name, field.Format(field.Run(recorded.Limits)), field.Format(field.Run(replayed.Limits)));
        return differences;
    }

    private static void Compare(List<string> differences, string name, string recorded, string replayed)
    {
        if (!string.Equals(recorded, replayed, StringComparison.Ordinal))
            differences.Add($"{name}: recorded '{recorded}', replayed '{replayed}'");
    }

    private static void CompareList(List<string> differences, string name, IReadOnlyList<string> recorded, IReadOnlyList<string> replayed)
    {
        if (!recorded.SequenceEqual(replayed, StringComparer.Ordinal))
            differences.Add(string.Create(CultureInfo.InvariantCulture,
                $"{name}: recorded [{string.Join(", ", recorded)}], replayed [{string.Join(", ", replayed)}]"));
    }
}
