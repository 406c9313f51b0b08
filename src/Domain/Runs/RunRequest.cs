using System.Text;

namespace Sandbox.Audited.Domain.Runs;

public sealed record RunFile(string Name, string Content);

/// <summary>A run as the client asked for it, before validation.</summary>
public sealed record RunRequest(
    string? Language,
    string? Code,
    string? Stdin = null,
    IReadOnlyList<string>? Args = null,
    IReadOnlyList<RunFile>? Files = null,
    RequestedLimits? Limits = null,
    string? Classification = null,
    string? Runtime = null,
    string? Isolation = null);

/// <summary>A request that passed validation: canonical language, sizes known, nothing missing.</summary>
public sealed record ValidRunRequest(
    string Language,
    string Code,
    byte[] Stdin,
    IReadOnlyList<string> Args,
    IReadOnlyList<RunFile> Files,
    RequestedLimits Limits,
    string Classification,
    string? Runtime = null,
    string Isolation = Runtimes.Isolation.Standard);

public enum RejectionKind { Invalid, TooLarge }

public sealed record Rejection(RejectionKind Kind, IReadOnlyList<string> Errors);

public static class RunRequestValidation
{
    public const int MaxCodeBytes = 256 * 1024;
    public const int MaxStdinBytes = 1024 * 1024;
    public const int MaxArgs = 64;
    public const int MaxArgBytes = 4096;
    public const int MaxFiles = 16;
    public const int MaxFilesTotalBytes = 1024 * 1024;
    public const int MaxFileNameLength = 128;

    /// <summary>The answer and the record list at most this many errors, then how many more there were.</summary>
    public const int MaxErrorsListed = 20;

    /// <summary>
    /// Checks a request; returns either a valid request or its problems (at most <see cref="MaxErrorsListed"/>), never
    /// both. Ceilings are the policy's global ceilings: a limit above them is refused, not silently lowered.
    /// </summary>
    public static (ValidRunRequest? Valid, Rejection? Rejection) Validate(RunRequest request, RunLimits? ceilings = null)
    {
        var errors = new List<string>();
        var tooLarge = false;

        var language = Languages.Canonical(request.Language);
        if (string.IsNullOrWhiteSpace(request.Language))
            errors.Add($"'language' is required: one of {string.Join(", ", Languages.All)}.");
        else if (language is null)
            errors.Add($"Unknown language '{request.Language}': use one of {string.Join(", ", Languages.All)}.");

        var code = request.Code ?? "";
        var codeBytes = Encoding.UTF8.GetByteCount(code);
        if (string.IsNullOrWhiteSpace(code))
            errors.Add("'code' is required and must not be empty.");
        else if (codeBytes > MaxCodeBytes)
        {
            tooLarge = true;
            errors.Add($"'code' is {codeBytes} bytes; the maximum is {MaxCodeBytes} bytes (256 KiB).");
        }
        if (code.Contains('\0'))
            errors.Add("'code' must not contain NUL characters.");

        var stdin = Encoding.UTF8.GetBytes(request.Stdin ?? "");
        if (stdin.Length > MaxStdinBytes)
        {
            tooLarge = true;
            errors.Add($"'stdin' is {stdin.Length} bytes; the maximum is {MaxStdinBytes} bytes.");
        }

        var args = request.Args ?? [];
        if (args.Count > MaxArgs)
            errors.Add($"At most {MaxArgs} 'args' are allowed; got {args.Count}.");
        for (var i = 0; i < args.Count; i++)
        {
            if (args[i] is null) errors.Add($"'args[{i}]' must be a string.");
            else if (args[i].Contains('\0')) errors.Add($"'args[{i}]' must not contain NUL characters.");
            else if (Encoding.UTF8.GetByteCount(args[i]) > MaxArgBytes) errors.Add($"'args[{i}]' is longer than {MaxArgBytes} bytes.");
        }

        var files = request.Files ?? [];
        if (files.Count > MaxFiles)
            errors.Add($"At most {MaxFiles} 'files' are allowed; got {files.Count}.");
        var names = new HashSet<string>(StringComparer.Ordinal);
        long filesTotal = 0;
        for (var i = 0; i < files.Count; i++)
        {
            var file = files[i];
            if (file is null) { errors.Add($"'files[{i}]' must be an object with 'name' and 'content'."); continue; }
            if (!IsPlainFileName(file.Name))
                errors.Add($"'files[{i}].name' must be a plain file name (no '/', no '..', at most {MaxFileNameLength} characters).");
            else if (!names.Add(file.Name) || IsReservedName(file.Name))
                errors.Add($"'files[{i}].name' '{file.Name}' is duplicated or reserved.");
            filesTotal += Encoding.UTF8.GetByteCount(file.Content ?? "");
        }
        if (filesTotal > MaxFilesTotalBytes)
        {
            tooLarge = true;
            errors.Add($"'files' hold {filesTotal} bytes in total; the maximum is {MaxFilesTotalBytes} bytes.");
        }

        var classification = string.IsNullOrWhiteSpace(request.Classification)
            ? Policies.Classification.Default
            : request.Classification.Trim().ToLowerInvariant();
        if (!Policies.Classification.All.Contains(classification))
            errors.Add($"Unknown classification '{request.Classification}': use one of {string.Join(", ", Policies.Classification.All)}.");

        var isolation = Runtimes.Isolation.Canonical(request.Isolation ?? Runtimes.Isolation.Standard);
        if (isolation is null)
            errors.Add($"Unknown isolation '{request.Isolation}': use one of {string.Join(", ", Runtimes.Isolation.All)}.");

        var limits = request.Limits ?? RequestedLimits.None;
        errors.AddRange(LimitFloors.Problems(limits, ceilings));

        if (errors.Count > 0)
            return (null, new Rejection(tooLarge ? RejectionKind.TooLarge : RejectionKind.Invalid, Bounded(errors)));

        if (limits.Cpus is { } exact)
            limits = limits with { Cpus = LimitFloors.Hundredths(exact) };
        var cleanFiles = files.Select(f => new RunFile(f.Name, f.Content ?? "")).ToList();
        return (new ValidRunRequest(language!, code, stdin, args.ToList(), cleanFiles, limits, classification,
            string.IsNullOrWhiteSpace(request.Runtime) ? null : request.Runtime.Trim(), isolation!), null);
    }

    /// <summary>The first errors and a count of the rest, so a request with thousands of bad items gets a small answer.</summary>
    public static IReadOnlyList<string> Bounded(IReadOnlyList<string> errors) =>
        errors.Count <= MaxErrorsListed
            ? errors
            : [.. errors.Take(MaxErrorsListed), $"... and {errors.Count - MaxErrorsListed} more error(s)."];

    private static bool IsPlainFileName(string? name) =>
        !string.IsNullOrEmpty(name)
        && name.Length <= MaxFileNameLength
        && name is not "." and not ".."
        && !name.Contains('/') && !name.Contains('\\') && !name.Contains('\0')
        && !name.Any(char.IsControl);

    // The supervisor writes the program itself as main.<ext>; a file must not replace it.
    private static bool IsReservedName(string name) => name.StartsWith("main.", StringComparison.Ordinal);
}
