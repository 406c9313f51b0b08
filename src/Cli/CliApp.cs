using System.CommandLine;
using System.Text.Json;
using Sandbox.Audited.Client;

namespace Sandbox.Audited.Cli;

/// <summary>
/// The commands of `sandbox-audited`. The service URL comes from --url or SBX_URL (default http://127.0.0.1:8080); the
/// token from SBX_TOKEN, or the file named by --token-file or SBX_TOKEN_FILE (never a command-line argument: those
/// are visible to every local user in the process list).
/// </summary>
public static class CliApp
{
    /// <summary>The service could not or would not run the program (refused, denied, failed): as `docker run` does.</summary>
    public const int ServiceError = 125;

    /// <summary>The program hit its time limit: as timeout(1) does.</summary>
    public const int TimedOut = 124;

    private static readonly JsonSerializerOptions Pretty = new(JsonSerializerDefaults.Web) { WriteIndented = true };

    public static Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr) =>
        Build(stdout, stderr).Parse(args).InvokeAsync(new InvocationConfiguration { Output = stdout, Error = stderr });

    public static RootCommand Build(TextWriter stdout, TextWriter stderr)
    {
        var url = new Option<string>("--url") { Description = "The service's root URL (default: SBX_URL, else http://127.0.0.1:8080).", Recursive = true };
        var tokenFile = new Option<FileInfo?>("--token-file") { Description = "A file holding the bearer token (default: SBX_TOKEN, else SBX_TOKEN_FILE).", Recursive = true };
        var root = new RootCommand("Sandbox.Audited: run code in a locked-down sandbox and read its tamper-evident record.") { url, tokenFile };

        SandboxAuditedClient Client(ParseResult p) => Connect(p.GetValue(url), p.GetValue(tokenFile));

        root.Subcommands.Add(RunCommand(Client, stdout, stderr));
        root.Subcommands.Add(ShowCommand(Client, stdout, stderr));
        root.Subcommands.Add(EventsCommand(Client, stdout, stderr));
        root.Subcommands.Add(ArtifactsCommand(Client, stderr));
        root.Subcommands.Add(ExportCommand(Client, stdout, stderr));
        root.Subcommands.Add(VerifyCommandLine(stdout));
        return root;
    }

    private static Command RunCommand(Func<ParseResult, SandboxAuditedClient> client, TextWriter stdout, TextWriter stderr)
    {
        var file = new Argument<FileInfo>("script") { Description = "The program to run (.py, .js or .sh; --language for others)." };
        var args = new Argument<string[]>("args") { Description = "Arguments passed to the program.", Arity = ArgumentArity.ZeroOrMore };
        var language = new Option<string?>("--language", "-l") { Description = "python, javascript or shell (default: from the file's extension)." };
        var runtime = new Option<string?>("--runtime", "-r") { Description = "A runtime id from GET /v1/runtimes (default: the language's lean runtime)." };
        var files = new Option<FileInfo[]>("--file", "-f") { Description = "An input file placed next to the program, under its own name (repeatable)." };
        var stdin = new Option<FileInfo?>("--stdin") { Description = "A file whose content is the program's standard input." };
        var classification = new Option<string?>("--classification") { Description = "The data classification policy decides on." };
        var timeout = new Option<int?>("--timeout-ms") { Description = "Wall-clock limit in milliseconds (within policy)." };
        var json = new Option<bool>("--json") { Description = "Print the run's final record as JSON instead of streaming its output." };
        var artifacts = new Option<DirectoryInfo?>("--artifacts") { Description = "Download what the program wrote under out/ into this directory (digests checked)." };
        var command = new Command("run", "Run a program, stream its output live, and exit with its exit code.")
        {
            file, args, language, runtime, files, stdin, classification, timeout, json, artifacts,
        };
        command.SetAction(async (p, ct) =>
        {
            var script = p.GetValue(file)!;
            var lang = p.GetValue(language) ?? LanguageOf(script.Name);
            if (lang is null)
            {
                await stderr.WriteLineAsync($"Cannot tell the language of '{script.Name}': pass --language python|javascript|shell.");
                return 2;
            }
            var request = new RunRequest(lang, await File.ReadAllTextAsync(script.FullName, ct))
            {
                Runtime = p.GetValue(runtime),
                Args = p.GetValue(args) is { Length: > 0 } a ? a : null,
                Files = p.GetValue(files) is { Length: > 0 } fs
                    ? await Task.WhenAll(fs.Select(async f => InputFile.FromBytes(f.Name, await File.ReadAllBytesAsync(f.FullName, ct))))
                    : null,
                Stdin = p.GetValue(stdin) is { } s ? await File.ReadAllTextAsync(s.FullName, ct) : null,
                Classification = p.GetValue(classification),
                Limits = p.GetValue(timeout) is { } t ? new RequestedLimits { TimeoutMs = t } : null,
                Wait = false,
            };
            return await Guard(stderr, async () =>
            {
                var api = client(p);
                var started = await api.StartRunAsync(request, ct: ct);
                if (!p.GetValue(json))
                    await StreamOutputAsync(api, started.RunId, ct);
                var run = started.IsFinished ? started : await api.WaitAsync(started.RunId, TimeSpan.FromMinutes(10), ct);
                if (p.GetValue(json))
                    await stdout.WriteLineAsync(JsonSerializer.Serialize(run, Pretty));
                if (p.GetValue(artifacts) is { } directory)
                    await DownloadArtifactsAsync(api, run.RunId, directory, stderr, ct);
                return ExitCodeOf(run, stderr);
            });
        });
        return command;
    }

    /// <summary>
    /// Copies the program's output chunks to this process's stdout and stderr as they arrive. A stream that ends before `end`
    /// (fell_behind: this process read too slowly) is resumed from the last message's id, so no output is left out.
    /// </summary>
    private static async Task StreamOutputAsync(SandboxAuditedClient api, Guid runId, CancellationToken ct)
    {
        await using var stdout = Console.OpenStandardOutput();
        await using var stderr = Console.OpenStandardError();
        string? lastId = null;
        for (var more = true; more;)
        {
            more = false;
            await foreach (var message in api.StreamAsync(runId, lastId, ct))
            {
                lastId = message.Id ?? lastId;
                more = message.Event == "fell_behind";
                if (message.IsStdout || message.IsStderr)
                {
                    var target = message.IsStdout ? stdout : stderr;
                    await target.WriteAsync(message.OutputBytes(), ct);
                    await target.FlushAsync(ct);
                }
            }
        }
    }

    /// <summary>The program's own exit code when it ran; otherwise a shell-style code, and the reason on stderr.</summary>
    public static int ExitCodeOf(Run run, TextWriter stderr)
    {
        if (run.TimedOut)
        {
            stderr.WriteLine($"sandbox-audited: run {run.RunId} timed out.");
            return TimedOut;
        }
        if (run.ExitCode is { } code and >= 0)
            return code;
        if (run.Signal is { } signal and > 0)
        {
            stderr.WriteLine($"sandbox-audited: run {run.RunId} was killed by signal {signal}{(run.OomKilled ? " (out of memory)" : "")}.");
            return 128 + signal;
        }
        stderr.WriteLine($"sandbox-audited: run {run.RunId} ended {run.Status}: {run.Reason ?? string.Join(" ", run.Errors ?? [])}");
        return ServiceError;
    }

    private static Command ArtifactsCommand(Func<ParseResult, SandboxAuditedClient> client, TextWriter stderr)
    {
        var id = new Argument<Guid>("run-id");
        var output = new Option<DirectoryInfo>("--out", "-o") { Description = "Where to put them (default: the current directory).", DefaultValueFactory = _ => new DirectoryInfo(".") };
        var command = new Command("artifacts", "Download a run's artifacts (what its program wrote under out/), each checked against its recorded digest.") { id, output };
        command.SetAction(async (p, ct) => await Guard(stderr, async () =>
        {
            await DownloadArtifactsAsync(client(p), p.GetValue(id), p.GetValue(output)!, stderr, ct);
            return 0;
        }));
        return command;
    }

    /// <summary>Stored artifacts are written under their recorded names (subdirectories kept); the rest is reported on stderr.</summary>
    private static async Task DownloadArtifactsAsync(SandboxAuditedClient api, Guid runId, DirectoryInfo directory, TextWriter stderr, CancellationToken ct)
    {
        var root = Path.GetFullPath(directory.FullName);
        foreach (var artifact in await api.GetArtifactsAsync(runId, ct))
        {
            var path = Path.GetFullPath(Path.Combine(root, artifact.Name));
            if (!artifact.IsStored || !path.StartsWith(root + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            {
                await stderr.WriteLineAsync($"  {artifact.Name}: not downloaded ({artifact.Status}{(artifact.Reason is null ? "" : ": " + artifact.Reason)})");
                continue;
            }
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            await using var file = File.Create(path);
            var sha = await api.DownloadArtifactAsync(artifact, file, ct);
            await stderr.WriteLineAsync($"  {artifact.Name}: {artifact.Bytes} bytes, sha256 {sha}");
        }
    }

    private static Command ShowCommand(Func<ParseResult, SandboxAuditedClient> client, TextWriter stdout, TextWriter stderr)
    {
        var id = new Argument<Guid>("run-id");
        var command = new Command("show", "Show a run's result and its recorded timeline.") { id };
        command.SetAction(async (p, ct) => await Guard(stderr, async () =>
        {
            var api = client(p);
            var runId = p.GetValue(id);
            var run = await api.GetRunAsync(runId, ct);
            var events = await api.GetEventsAsync(runId, ct);
            await stdout.WriteLineAsync($"run {run.RunId}  {run.Status}  exit {run.ExitCode?.ToString() ?? "-"}  {run.Language}  by {run.Subject} ({run.Tenant})");
            var start = events.Count > 0 ? events[0].Timestamp : DateTimeOffset.MinValue;
            foreach (var e in events)
                await stdout.WriteLineAsync($"  {e.Version,3}  +{(e.Timestamp - start).TotalMilliseconds,8:F1} ms  {e.Type,-22} {Short(e.Hash)} <- {Short(e.PrevHash)}");
            return 0;
        }));
        return command;
    }

    private static Command EventsCommand(Func<ParseResult, SandboxAuditedClient> client, TextWriter stdout, TextWriter stderr)
    {
        var id = new Argument<Guid>("run-id");
        var command = new Command("events", "Print a run's recorded events as JSON, with their hashes.") { id };
        command.SetAction(async (p, ct) => await Guard(stderr, async () =>
        {
            var events = await client(p).GetEventsAsync(p.GetValue(id), ct);
            await stdout.WriteLineAsync(JsonSerializer.Serialize(events, Pretty));
            return 0;
        }));
        return command;
    }

    private static Command ExportCommand(Func<ParseResult, SandboxAuditedClient> client, TextWriter stdout, TextWriter stderr)
    {
        var format = new Option<string>("--format") { Description = "ndjson (default) or csv.", DefaultValueFactory = _ => "ndjson" };
        var output = new Option<FileInfo?>("--out", "-o") { Description = "Write to this file instead of standard output." };
        var type = new Option<string?>("--type") { Description = "Only events of this type." };
        var subject = new Option<string?>("--subject") { Description = "Only runs of this subject." };
        var command = new Command("export", "Export the tenant's audit record (auditor role).") { format, output, type, subject };
        command.SetAction(async (p, ct) => await Guard(stderr, async () =>
        {
            var query = string.Join("&", new[] { ("type", p.GetValue(type)), ("subject", p.GetValue(subject)) }
                .Where(q => q.Item2 is not null).Select(q => $"{q.Item1}={Uri.EscapeDataString(q.Item2!)}"));
            await using var target = p.GetValue(output) is { } f ? f.Create() : Console.OpenStandardOutput();
            await client(p).ExportAsync(target, p.GetValue(format)!, query, ct);
            return 0;
        }));
        return command;
    }

    /// <summary>Offline: the same checks as sbx-verify (one implementation), on an export and what an auditor kept.</summary>
    private static Command VerifyCommandLine(TextWriter stdout)
    {
        var command = new Command("verify", "Check an export offline: every hash (RFC 8785), chain link, signed checkpoint, Merkle "
            + "root and RFC 9162 proof; needs no service. Arguments as sbx-verify: EXPORT [--checkpoint F] [--key F] [--inclusion F] [--consistency F].")
        {
            TreatUnmatchedTokensAsErrors = false,
        };
        command.SetAction(p => Sandbox.Audited.Verifier.VerifyCommand.Run([.. p.UnmatchedTokens], stdout));
        return command;
    }

    private static async Task<int> Guard(TextWriter stderr, Func<Task<int>> action)
    {
        try
        {
            return await action();
        }
        catch (ProblemException e)
        {
            await stderr.WriteLineAsync($"sandbox-audited: {(int)e.Status} {e.Title}: {e.Detail}");
            foreach (var error in e.Errors)
                await stderr.WriteLineAsync("  - " + error);
            if (e.RetryAfter is { } after)
                await stderr.WriteLineAsync($"  retry after {after.TotalSeconds:F0} s");
            return ServiceError;
        }
        catch (HttpRequestException e)
        {
            await stderr.WriteLineAsync($"sandbox-audited: cannot reach the service: {e.Message}");
            return ServiceError;
        }
        catch (MissingTokenException e)
        {
            await stderr.WriteLineAsync("sandbox-audited: " + e.Message);
            return 2;
        }
    }

    private static SandboxAuditedClient Connect(string? url, FileInfo? tokenFile)
    {
        var baseUrl = url ?? Environment.GetEnvironmentVariable("SBX_URL") ?? "http://127.0.0.1:8080";
        var token = tokenFile is not null ? File.ReadAllText(tokenFile.FullName).Trim()
            : Environment.GetEnvironmentVariable("SBX_TOKEN") is { Length: > 0 } env ? env.Trim()
            : Environment.GetEnvironmentVariable("SBX_TOKEN_FILE") is { Length: > 0 } path ? File.ReadAllText(path).Trim()
            : throw new MissingTokenException();
        var http = new HttpClient { BaseAddress = new Uri(baseUrl.TrimEnd('/') + "/"), Timeout = Timeout.InfiniteTimeSpan };
        return new SandboxAuditedClient(http, token);
    }

    public static string? LanguageOf(string fileName) => Path.GetExtension(fileName).ToLowerInvariant() switch
    {
        ".py" => "python",
        ".js" or ".mjs" or ".cjs" => "javascript",
        ".sh" => "shell",
        _ => null,
    };

    private static string Short(string? hash) => hash is null ? "-" : hash[..Math.Min(12, hash.Length)];

    private sealed class MissingTokenException() : Exception("no token: set SBX_TOKEN, or SBX_TOKEN_FILE / --token-file to a file holding it (./sbx token mints one in development).");
}
