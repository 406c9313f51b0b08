using System.Diagnostics;
using System.Net;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Options;
using Sandbox.Audited.Executor;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Executor.Differential;

/// <summary>
/// Each program of <c>corpus/</c> runs twice: through the service (POST /v1/runs) and directly in the same image
/// with the image's interpreter (<c>docker run --init … python3 /tmp/work/main.py</c>, same path, cwd and
/// environment). Stdout, stderr and the exit status (128 + signal for a signalled process, as a shell reports
/// it) must be the same, after the known differences below are rewritten on both sides.
/// </summary>
[Collection(ServiceCollection.Name)]
public sealed partial class DifferentialTests(ServiceFixture service)
{
    private static readonly string Corpus = Path.Combine(TestEnvironment.RepoRoot, "tests", "Integration.Tests", "Executor", "Differential", "corpus");

    private static readonly Dictionary<string, (string Language, string Interpreter)> ByExtension = new()
    {
        [".py"] = ("python", "python3"),
        [".js"] = ("javascript", "node"),
        [".sh"] = ("shell", "/bin/sh"),
    };

    private readonly HttpClient _runner = service.Runner("dora", "tenant-differential");

    public static TheoryData<string> Programs()
    {
        var data = new TheoryData<string>();
        foreach (var file in Directory.GetFiles(Corpus).Select(Path.GetFileName).Order(StringComparer.Ordinal))
        {
            if (file != "recursion_depth.py")
                data.Add(file!);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Programs))]
    public async Task ProgramBehavesAsWhenRunDirectly(string file)
    {
        var code = await File.ReadAllTextAsync(Path.Combine(Corpus, file));
        var language = ByExtension[Path.GetExtension(file)].Language;

        var direct = await RunDirectlyAsync(file, code);
        var viaService = await RunThroughServiceAsync(language, code);

        Assert.Equal(Normalize(direct.Stdout), Normalize(viaService.Stdout));
        Assert.Equal(Normalize(direct.Stderr), Normalize(viaService.Stderr));
        Assert.Equal(direct.Status, viaService.Status);
    }

    /// <summary>Known difference: user code starts one Python frame deeper than in a direct run (see the README).</summary>
    [Fact]
    public async Task PythonRecursionDepthIsOneFrameShortOfADirectRun()
    {
        var code = await File.ReadAllTextAsync(Path.Combine(Corpus, "recursion_depth.py"));

        var direct = (await RunDirectlyAsync("recursion_depth.py", code)).Stdout.Split(' ');
        var viaService = (await RunThroughServiceAsync("python", code)).Stdout.Split(' ');

        Assert.Equal(direct[1], viaService[1]); // sys.getrecursionlimit() is the same
        Assert.Equal(int.Parse(direct[0]) - 1, int.Parse(viaService[0]));
    }

    /// <summary>
    /// Rewrites the known differences, the same on both sides:
    /// Node's outermost stack frame is the event loop's (the bootstrap starts the main module from setImmediate so
    /// that none of its own frames shows) instead of node's entry script; Python's "[Previous line repeated N more
    /// times]" counts one less (one frame deeper start).
    /// </summary>
    private static string Normalize(string text) =>
        RepeatedLine().Replace(EntryFrame().Replace(text, "    at <node entry point>"), "[Previous line repeated N more times]");

    [GeneratedRegex(@"^    at (process\.processImmediate \(node:internal/timers:\d+:\d+\)|node:internal/main/run_main_module:\d+:\d+)$", RegexOptions.Multiline)]
    private static partial Regex EntryFrame();

    [GeneratedRegex(@"\[Previous line repeated \d+ more times\]")]
    private static partial Regex RepeatedLine();

    private sealed record Result(string Stdout, string Stderr, int Status);

    private async Task<Result> RunThroughServiceAsync(string language, string code)
    {
        var (response, run) = await _runner.RunAsync(new { language, code, limits = new { timeoutMs = 20000 } });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var (eventsResponse, events) = await _runner.GetJsonAsync($"/v1/runs/{run.Str("runId")}/events");
        Assert.Equal(HttpStatusCode.OK, eventsResponse.StatusCode);
        var exited = events.AsArray().Single(e => e!.Str("type") == "sandbox_exited")!["data"]!;
        var status = exited.Str("exitCode") is { Length: > 0 } exit ? int.Parse(exit) : 128 + int.Parse(exited.Str("signal"));
        return new Result(run.Str("stdout.content"), run.Str("stderr.content"), status);
    }

    /// <summary>The same image, the same file path, cwd and environment; the interpreter is not PID 1 (--init).</summary>
    private async Task<Result> RunDirectlyAsync(string file, string code)
    {
        var (language, interpreter) = ByExtension[Path.GetExtension(file)];
        var image = ((IOptions<ExecutorOptions>)service.Services.GetService(typeof(IOptions<ExecutorOptions>))!).Value.ImageFor(language);
        var script = "/tmp/work/main" + Path.GetExtension(file);
        var start = new ProcessStartInfo("docker")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var arg in (string[])
        [
            "run", "--rm", "-i", "--init", "--network", "none", "--read-only", "--tmpfs", "/tmp:rw,nosuid,nodev,size=16m,mode=1777",
            "--user", "65534:65534", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--memory", "128m", image,
            "/bin/sh", "-c", $"mkdir /tmp/work && cat > {script} && cd /tmp/work && exec env -i PATH=/usr/local/bin:/usr/bin:/bin "
                + $"HOME=/tmp/work LANG=C.UTF-8 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 {interpreter} {script}",
        ])
        {
            start.ArgumentList.Add(arg);
        }
        using var process = Process.Start(start)!;
        await process.StandardInput.WriteAsync(code);
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(timeout.Token);
        return new Result(await stdout, await stderr, process.ExitCode);
    }
}
