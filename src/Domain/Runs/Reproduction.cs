namespace Sandbox.Audited.Domain.Runs;

/// <summary>One output of a run and of its reproduction: both digests, and whether the bytes are identical.</summary>
public sealed record OutputComparison(string Output, string? OriginalSha256, string? ReproducedSha256, bool Identical);

public sealed record ReproductionComparison(bool Identical, IReadOnlyList<OutputComparison> Outputs, IReadOnlyList<string> Differs);

public static class Reproduction
{
    /// <summary>Compares output streams by digest (equal SHA-256 = byte-identical); an output missing on either side differs.</summary>
    public static ReproductionComparison Compare(OutputRecorded? original, OutputRecorded? reproduced)
    {
        var outputs = new List<OutputComparison>
        {
            Of("stdout", original?.Stdout.Sha256, reproduced?.Stdout.Sha256),
            Of("stderr", original?.Stderr.Sha256, reproduced?.Stderr.Sha256),
        };
        var differs = outputs.Where(o => !o.Identical).Select(o => o.Output).ToList();
        return new ReproductionComparison(differs.Count == 0, outputs, differs);
    }

    private static OutputComparison Of(string name, string? original, string? reproduced) =>
        new(name, original, reproduced, original is not null && original == reproduced);
}
