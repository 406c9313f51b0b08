namespace Sandbox.Audited.Domain.Runs;

/// <summary>One output of a run and of its reproduction: both digests, and whether the bytes are identical.</summary>
public sealed record OutputComparison(string Output, string? OriginalSha256, string? ReproducedSha256, bool Identical);

public sealed record ReproductionComparison(bool Identical, IReadOnlyList<OutputComparison> Outputs, IReadOnlyList<string> Differs);

public static class Reproduction
{
    /// <summary>
    /// Compares output streams and artifacts (by name, as "artifact:NAME") by digest: equal SHA-256 = byte-identical; an
    /// output missing on either side, or an artifact not stored on either side, differs.
    /// </summary>
    public static ReproductionComparison Compare(OutputRecorded? original, OutputRecorded? reproduced,
        IReadOnlyList<ArtifactRecorded>? originalArtifacts = null, IReadOnlyList<ArtifactRecorded>? reproducedArtifacts = null)
    {
        var outputs = new List<OutputComparison>
        {
            Of("stdout", original?.Stdout.Sha256, reproduced?.Stdout.Sha256),
            Of("stderr", original?.Stderr.Sha256, reproduced?.Stderr.Sha256),
        };
        var before = (originalArtifacts ?? []).ToDictionary(a => a.Name, a => a.Sha256, StringComparer.Ordinal);
        var after = (reproducedArtifacts ?? []).ToDictionary(a => a.Name, a => a.Sha256, StringComparer.Ordinal);
        foreach (var name in before.Keys.Union(after.Keys).Order(StringComparer.Ordinal))
            outputs.Add(Of("artifact:" + name, before.GetValueOrDefault(name), after.GetValueOrDefault(name)));
        var differs = outputs.Where(o => !o.Identical).Select(o => o.Output).ToList();
        return new ReproductionComparison(differs.Count == 0, outputs, differs);
    }

    private static OutputComparison Of(string name, string? original, string? reproduced) =>
        new(name, original, reproduced, original is not null && original == reproduced);
}
