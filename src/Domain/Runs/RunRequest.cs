using System.Text;
using Sandbox.Audited.Domain.Hashing;

namespace Sandbox.Audited.Domain.Runs;

/// <summary>A file as the JSON form sends it: text, or base64 when <c>encoding</c> is "base64".</summary>
public sealed record RunFile(string Name, string Content, string? Encoding = null);

/// <summary>
/// An input file after validation: its exact bytes' size and SHA-256, and how to read them again (from memory for the
/// JSON form, from the request's spool file for multipart) so that large inputs are streamed, never held whole.
/// </summary>
public sealed record InputFile(string Name, long Bytes, string Sha256, Func<CancellationToken, Task<Stream>> Open)
{
    public static InputFile FromBytes(string name, byte[] content) =>
        new(name, content.Length, Sha256Hex.Of(content), _ => Task.FromResult<Stream>(new MemoryStream(content, writable: false)));
}

/// <summary>How much input a run may carry (Runs:MaxInputBytes, Runs:MaxFileBytes, Runs:MaxFiles).</summary>
public sealed record InputLimits(long MaxTotalBytes, long MaxFileBytes, int MaxFiles)
{
    public const long DefaultTotalBytes = 64L * 1024 * 1024;
    public static readonly InputLimits Default = new(DefaultTotalBytes, DefaultTotalBytes, 32);

    /// <summary>The file-count rule, for validation and for a streamed form that must stop spooling at the first file too many.</summary>
    public string? TooManyFiles(int count) => count > MaxFiles ? $"At most {MaxFiles} files are allowed; got {count}." : null;
}

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
    IReadOnlyList<InputFile> Files,
    RequestedLimits Limits,
    string Classification,
    string? Runtime = null,
    string Isolation = Runtimes.Isolation.Standard)
{
    /// <summary>What lands on the sandbox's /tmp before the program starts: the files and the code.</summary>
    public long InputBytes => Files.Sum(f => f.Bytes) + Encoding.UTF8.GetByteCount(Code);
}

public enum RejectionKind { Invalid, TooLarge }

public sealed record Rejection(RejectionKind Kind, IReadOnlyList<string> Errors);

public static class RunRequestValidation
{
    public const int MaxCodeBytes = 256 * 1024;
    public const int MaxStdinBytes = 1024 * 1024;
    public const int MaxArgs = 64;
    public const int MaxArgBytes = 4096;
    public const int MaxFileNameLength = 128;

    /// <summary>The answer and the record list at most this many errors, then how many more there were.</summary>
    public const int MaxErrorsListed = 20;

    /// <summary>
    /// Checks a request; returns either a valid request or its problems (at most <see cref="MaxErrorsListed"/>), never
    /// both. Ceilings are the policy's global ceilings: a limit above them is refused, not silently lowered.
    /// </summary>
    public static (ValidRunRequest? Valid, Rejection? Rejection) Validate(
        RunRequest request, RunLimits? ceilings = null, InputLimits? inputLimits = null, IReadOnlyList<InputFile>? uploaded = null)
    {
        var caps = inputLimits ?? InputLimits.Default;
        var errors = new List<string>();
        var tooLarge = false;

        var language = Languages.Canonical(request.Language);
        if (string.IsNullOrWhiteSpace(request.Language))
            errors.Add($"'language' is required: one of {string.Join(", ", Languages.All)}.");
        else if (language is null)
            errors.Add($"Unknown language '{ClientText.Echo(request.Language)}': use one of {string.Join(", ", Languages.All)}.");

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

        // The JSON form's files are decoded here; multipart files arrive already spooled and hashed.
        var files = new List<InputFile>();
        var jsonFiles = request.Files ?? [];
        for (var i = 0; i < jsonFiles.Count; i++)
        {
            var file = jsonFiles[i];
            if (file is null) { errors.Add($"'files[{i}]' must be an object with 'name' and 'content'."); continue; }
            var content = Decode(file, i, errors);
            if (content is not null)
                files.Add(InputFile.FromBytes(file.Name ?? "", content));
        }
        files.AddRange(uploaded ?? []);
        if (caps.TooManyFiles(files.Count) is { } tooMany)
            errors.Add(tooMany);
        var names = new HashSet<string>(StringComparer.Ordinal);
        long filesTotal = 0;
        for (var i = 0; i < files.Count; i++)
        {
            var file = files[i];
            if (!IsPlainFileName(file.Name))
                errors.Add($"File {i + 1} ('{Printable(file.Name)}'): the name must be a plain file name (no '/', no '..', no control characters, at most {MaxFileNameLength} characters).");
            else if (!names.Add(file.Name) || IsReservedName(file.Name))
                errors.Add($"File {i + 1} ('{Printable(file.Name)}'): the name is duplicated or reserved (main.*, out).");
            if (file.Bytes > caps.MaxFileBytes)
            {
                tooLarge = true;
                errors.Add($"File '{Printable(file.Name)}' is {file.Bytes} bytes; the maximum per file is {caps.MaxFileBytes} bytes.");
            }
            filesTotal += file.Bytes;
        }
        if (filesTotal > caps.MaxTotalBytes)
        {
            tooLarge = true;
            errors.Add($"The files hold {filesTotal} bytes in total; the maximum is {caps.MaxTotalBytes} bytes.");
        }

        var classification = string.IsNullOrWhiteSpace(request.Classification)
            ? Policies.Classification.Default
            : request.Classification.Trim().ToLowerInvariant();
        if (!Policies.Classification.All.Contains(classification))
            errors.Add($"Unknown classification '{ClientText.Echo(request.Classification)}': use one of {string.Join(", ", Policies.Classification.All)}.");

        var isolation = Runtimes.Isolation.Canonical(request.Isolation ?? Runtimes.Isolation.Standard);
        if (isolation is null)
            errors.Add($"Unknown isolation '{ClientText.Echo(request.Isolation)}': use one of {string.Join(", ", Runtimes.Isolation.All)}.");

        var limits = request.Limits ?? RequestedLimits.None;
        errors.AddRange(LimitFloors.Problems(limits, ceilings));

        if (errors.Count > 0)
            return (null, new Rejection(tooLarge ? RejectionKind.TooLarge : RejectionKind.Invalid, Bounded(errors)));

        if (limits.Cpus is { } exact)
            limits = limits with { Cpus = LimitFloors.Hundredths(exact) };
        return (new ValidRunRequest(language!, code, stdin, args.ToList(), files, limits, classification,
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

    // The supervisor writes the program itself as main.<ext> and creates out/ for artifacts; a file must not replace them.
    private static bool IsReservedName(string name) => name.StartsWith("main.", StringComparison.Ordinal) || name == "out";

    private static byte[]? Decode(RunFile file, int i, List<string> errors)
    {
        var content = file.Content ?? "";
        switch (file.Encoding)
        {
            case null or "utf8":
                return Encoding.UTF8.GetBytes(content);
            case "base64":
                try
                {
                    return Convert.FromBase64String(content);
                }
                catch (FormatException)
                {
                    errors.Add($"'files[{i}].content' is not valid base64 (RFC 4648, with padding).");
                    return null;
                }
            default:
                errors.Add($"'files[{i}].encoding' is '{ClientText.Echo(file.Encoding)}'; use \"utf8\" (the default) or \"base64\".");
                return null;
        }
    }

    private static string Printable(string? name) => ClientText.Clean(name, MaxFileNameLength);
}
