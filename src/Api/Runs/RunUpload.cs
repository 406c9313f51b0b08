using System.Security.Cryptography;
using System.Text.Json.Nodes;
using System.Text.Json;
using System.Text;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Net.Http.Headers;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Domain.Text;

namespace Sandbox.Audited.Api.Runs;

/// <summary>How much input a run may carry (section "Runs"): the multipart form's files, and the JSON form's within its body cap.</summary>
public sealed class RunInputOptions
{
    public const string Section = "Runs";

    public long MaxInputBytes { get; set; } = InputLimits.DefaultTotalBytes;
    public long MaxFileBytes { get; set; } = InputLimits.DefaultTotalBytes;
    public int MaxFiles { get; set; } = 32;

    public InputLimits Limits => new(MaxInputBytes, MaxFileBytes, MaxFiles);
}

/// <summary>
/// POST /v1/runs as multipart/form-data (what `curl -F` sends). Fields: language, runtime, isolation, code, stdin, classification, limits (a
/// JSON object), args (a JSON array), wait, callbackUrl; code and stdin may also be file parts. Every other file part is an
/// input file named by its field name. Parts are read one at a time and file parts go straight to a spool file, hashed as
/// they arrive: the request is never held whole. The spool lives until the run that uses it has ended.
/// </summary>
public sealed class RunUpload : IDisposable
{
    private const int MaxFieldBytes = 64 * 1024;

    // Code and stdin are read up to the JSON body's transport bound, so that their size rules are RunRequestValidation's alone.
    private const int MaxTextPartBytes = (int)RunEndpoints.MaxBodyBytes;
    private static readonly string[] Fields = ["language", "runtime", "isolation", "code", "stdin", "classification", "limits", "args", "wait", "callbackUrl"];

    private readonly string _directory;
    private bool _keep;

    private RunUpload(string directory) => _directory = directory;

    public RunRequestBody? Body { get; private set; }
    public List<InputFile> Files { get; } = [];
    public string? Error { get; private set; }
    public bool TooLarge { get; private set; }

    /// <summary>A JSON description of the form (fields, and each file's name and digest) for Idempotency-Key matching.</summary>
    public byte[] Description { get; private set; } = [];

    public static bool Is(HttpRequest request) =>
        request.ContentType is { } type && type.StartsWith("multipart/form-data", StringComparison.OrdinalIgnoreCase);

    public static async Task<RunUpload> ReadAsync(HttpRequest request, InputLimits limits, string spoolRoot, CancellationToken ct)
    {
        var upload = new RunUpload(Path.Combine(spoolRoot, "in-" + Guid.NewGuid().ToString("N")));
        // Kestrel's own cap (30 MB by default) would cut a 64 MB upload: the form is bounded by its parts' caps instead.
        if (request.HttpContext.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } size)
            size.MaxRequestBodySize = limits.MaxTotalBytes + 2L * MaxTextPartBytes + 1024 * 1024;
        try
        {
            await upload.ReadPartsAsync(request, limits, ct);
        }
        catch (Exception e) when (e is InvalidDataException or IOException or BadHttpRequestException && !ct.IsCancellationRequested)
        {
            upload.Fail(e is BadHttpRequestException { StatusCode: 413 }
                ? $"The form exceeds the maximum of {limits.MaxTotalBytes} bytes of input files (Runs:MaxInputBytes)."
                : "Malformed multipart/form-data body: " + e.Message, e is BadHttpRequestException { StatusCode: 413 });
        }
        catch
        {
            upload.Dispose(); // whatever else went wrong, the spooled files do not outlive the request
            throw;
        }
        return upload;
    }

    private async Task ReadPartsAsync(HttpRequest request, InputLimits limits, CancellationToken ct)
    {
        if (!MediaTypeHeaderValue.TryParse(request.ContentType, out var type)
            || HeaderUtilities.RemoveQuotes(type.Boundary).Value is not { Length: > 0 and <= 200 } boundary)
        {
            Fail("A multipart/form-data body needs a boundary parameter in its Content-Type.");
            return;
        }
        var reader = new MultipartReader(boundary, request.Body) { HeadersLengthLimit = 16 * 1024, BodyLengthLimit = null };
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        var description = new JsonObject();
        var files = new JsonArray();
        long total = 0;
        while (await reader.ReadNextSectionAsync(ct) is { } section)
        {
            if (!ContentDispositionHeaderValue.TryParse(section.ContentDisposition, out var disposition)
                || !disposition.DispositionType.Equals("form-data", StringComparison.OrdinalIgnoreCase)
                || HeaderUtilities.RemoveQuotes(disposition.Name).Value is not { Length: > 0 } name)
            {
                Fail("Each part needs 'Content-Disposition: form-data; name=\"...\"'.");
                return;
            }
            var isFile = disposition.FileName.HasValue || disposition.FileNameStar.HasValue;
            if (Fields.Contains(name) && (!isFile || name is "code" or "stdin"))
            {
                if (values.ContainsKey(name))
                {
                    Fail($"The form field '{ClientText.Echo(name)}' appears more than once.");
                    return;
                }
                var cap = name is "code" or "stdin" ? MaxTextPartBytes : MaxFieldBytes;
                string? value;
                try
                {
                    value = await ReadFieldAsync(section.Body, cap, ct);
                }
                catch (System.Text.DecoderFallbackException)
                {
                    Fail($"The form field '{ClientText.Echo(name)}' is not valid UTF-8 text; send binary input as a file part (curl -F 'data.bin=@path') and read it from the sandbox's working directory.");
                    return;
                }
                if (value is null)
                {
                    Fail($"The form field '{ClientText.Echo(name)}' is larger than {cap} bytes.", tooLarge: true);
                    return;
                }
                values[name] = value;
                description[name] = value;
                continue;
            }
            if (!isFile)
            {
                Fail($"Unknown form field '{ClientText.Echo(name)}': the fields are {string.Join(", ", Fields)}; input files are file parts (curl -F 'name=@path').");
                return;
            }
            if (limits.TooManyFiles(Files.Count + 1) is { } tooMany)
            {
                Fail(tooMany);
                return;
            }
            var file = await SpoolAsync(name, section.Body, Math.Min(limits.MaxFileBytes, limits.MaxTotalBytes - total), ct);
            if (file is null)
            {
                Fail($"File '{ClientText.Echo(name)}' goes beyond the input caps: {limits.MaxFileBytes} bytes per file, {limits.MaxTotalBytes} bytes in all (Runs:MaxFileBytes, Runs:MaxInputBytes).", tooLarge: true);
                return;
            }
            total += file.Bytes;
            Files.Add(file);
            files.Add(new JsonObject { ["name"] = name, ["bytes"] = file.Bytes, ["sha256"] = file.Sha256 });
        }
        description["files"] = files;
        Description = Encoding.UTF8.GetBytes(description.ToJsonString());
        Body = ToBody(values);
    }

    private RunRequestBody? ToBody(Dictionary<string, string> values)
    {
        try
        {
            bool? wait = values.TryGetValue("wait", out var w)
                ? w switch { "true" => true, "false" => false, _ => throw new JsonException("'wait' must be true or false.") }
                : null;
            return new RunRequestBody(
                values.GetValueOrDefault("language"),
                values.GetValueOrDefault("code"),
                values.GetValueOrDefault("stdin"),
                values.TryGetValue("args", out var args) ? JsonSerializer.Deserialize<List<string>>(args, RunEndpoints.Json) : null,
                null,
                values.TryGetValue("limits", out var limits) ? JsonSerializer.Deserialize<RequestedLimits>(limits, RunEndpoints.Json) : null,
                values.GetValueOrDefault("classification"),
                wait,
                values.GetValueOrDefault("callbackUrl"),
                values.GetValueOrDefault("runtime"),
                values.GetValueOrDefault("isolation"));
        }
        catch (JsonException e)
        {
            Fail("A form field holds malformed JSON ('limits' is a JSON object, 'args' a JSON array of strings): " + e.Message);
            return null;
        }
    }

    private static async Task<string?> ReadFieldAsync(Stream body, int cap, CancellationToken ct)
    {
        using var buffer = new MemoryStream();
        var chunk = new byte[16 * 1024];
        int read;
        while ((read = await body.ReadAsync(chunk, ct)) > 0)
        {
            if (buffer.Length + read > cap)
                return null;
            buffer.Write(chunk, 0, read);
        }
        return Utf8Text.Strict.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    private async Task<InputFile?> SpoolAsync(string name, Stream body, long cap, CancellationToken ct)
    {
        var path = Path.Combine(_directory, Files.Count.ToString(System.Globalization.CultureInfo.InvariantCulture));
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        long bytes = 0;
        // The node's own disk failing (full, unwritable) is not a malformed body, and its error names the spool's path.
        FileStream file;
        try
        {
            Directory.CreateDirectory(_directory);
            file = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 0, FileOptions.Asynchronous);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SpoolUnavailableException(e);
        }
        await using (file)
        {
            var buffer = new byte[81920];
            int read;
            while ((read = await body.ReadAsync(buffer, ct)) > 0)
            {
                bytes += read;
                if (bytes > cap)
                    return null;
                hash.AppendData(buffer, 0, read);
                try
                {
                    await file.WriteAsync(buffer.AsMemory(0, read), ct);
                }
                catch (IOException e)
                {
                    throw new SpoolUnavailableException(e);
                }
            }
        }
        return new InputFile(name, bytes, Convert.ToHexStringLower(hash.GetHashAndReset()),
            _ => Task.FromResult<Stream>(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 81920,
                FileOptions.Asynchronous | FileOptions.SequentialScan)));
    }

    private void Fail(string error, bool tooLarge = false)
    {
        Error ??= error;
        TooLarge |= tooLarge;
        Body = null;
    }

    /// <summary>The run took the spool: it is deleted when the run has ended, not when the request does.</summary>
    public void KeepUntil(Task run)
    {
        _keep = true;
        _ = run.ContinueWith(_ => Delete(), TaskScheduler.Default);
    }

    public void Dispose()
    {
        if (!_keep)
            Delete();
    }

    private void Delete()
    {
        try
        {
            if (Directory.Exists(_directory))
                Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
            // Best effort: the spool root is under the temp directory.
        }
    }
}

/// <summary>This node cannot spool an upload's files (its disk is full or unwritable): a 503, never the client's fault.</summary>
public sealed class SpoolUnavailableException(Exception inner) : Exception("The input spool cannot be written.", inner);
