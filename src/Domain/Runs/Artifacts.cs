namespace Sandbox.Audited.Domain.Runs;

/// <summary>
/// One entry the program left in its output directory (/tmp/work/out), recorded before the run's terminal event. Status:
/// "stored" (content in the evidence store under Sha256), "skipped" (not a regular file, or unreadable, or a bad name) or
/// "exceeded" (over the count, per-file or total cap). Reason says which, for the last two.
/// </summary>
public sealed record ArtifactRecorded(
    Guid RunId,
    string Name,
    long Bytes,
    string? Sha256,
    string? MediaType,
    string Status,
    string? Reason,
    DateTimeOffset At);

public static class ArtifactStatus
{
    public const string Stored = "stored";
    public const string Skipped = "skipped";
    public const string Exceeded = "exceeded";

    /// <summary>The supervisor's reason for not sending an entry, as a status: caps are "exceeded", the rest "skipped".</summary>
    public static string Of(string? reason) => reason switch
    {
        null => Stored,
        "count_cap" or "file_cap" or "total_cap" => Exceeded,
        _ => Skipped,
    };
}

/// <summary>Media types of artifacts by extension: a small fixed table, never a guess from the content.</summary>
public static class MediaTypes
{
    public const string Default = "application/octet-stream";

    private static readonly Dictionary<string, string> ByExtension = new(StringComparer.OrdinalIgnoreCase)
    {
        [".json"] = "application/json",
        [".csv"] = "text/csv",
        [".txt"] = "text/plain",
        [".log"] = "text/plain",
        [".md"] = "text/markdown",
        [".html"] = "text/html",
        [".xml"] = "application/xml",
        [".pdf"] = "application/pdf",
        [".png"] = "image/png",
        [".jpg"] = "image/jpeg",
        [".jpeg"] = "image/jpeg",
        [".svg"] = "image/svg+xml",
        [".zip"] = "application/zip",
        [".gz"] = "application/gzip",
        [".xlsx"] = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        [".parquet"] = "application/vnd.apache.parquet",
    };

    public static string For(string name)
    {
        var dot = name.LastIndexOf('.');
        var slash = name.LastIndexOf('/');
        return dot > slash + 1 && ByExtension.TryGetValue(name[dot..], out var type) ? type : Default;
    }
}

/// <summary>Inputs are written to the sandbox's /tmp (a tmpfs of limits.tmpfsMb) before the program starts.</summary>
public static class InputBudget
{
    /// <summary>Room kept free on /tmp for the program itself (its out/ directory, temporary files).</summary>
    public const long HeadroomBytes = 1024 * 1024;

    public static string? Problem(ValidRunRequest request, RunLimits limits)
    {
        var room = (long)limits.TmpfsMb * 1024 * 1024;
        if (request.InputBytes + HeadroomBytes <= room)
            return null;
        var neededMb = (request.InputBytes + HeadroomBytes + 1024 * 1024 - 1) / (1024 * 1024);
        return $"The inputs (files and code, {request.InputBytes} bytes) do not fit the sandbox's /tmp of {limits.TmpfsMb} MiB with "
            + $"{HeadroomBytes / 1024} KiB to spare; ask for 'limits.tmpfsMb' of at least {neededMb} (within the policy's ceiling).";
    }
}
