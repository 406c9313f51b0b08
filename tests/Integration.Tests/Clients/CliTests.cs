using System.Diagnostics;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Cli;
using Sandbox.Audited.Tests.Browser;

namespace Sandbox.Audited.Tests.Clients;

/// <summary>`sandbox-audited` as a person runs it: a separate process against the service on a real loopback port.</summary>
[Collection(BrowserCollection.Name)]
public sealed class CliTests(BrowserFixture service) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("sbx-cli-").FullName;

    [Fact]
    public async Task RunStreamsTheProgramsOutputAndExitsWithItsExitCode()
    {
        var script = Write("report.py", "import sys\nprint('rows', len(open('tx.csv').read().splitlines()), sys.argv[1:])\nprint('warn', file=sys.stderr)\nsys.exit(7)\n");
        var data = Write("tx.csv", "id,amount\n1,10\n2,20\n");

        var (code, stdout, stderr) = await CliAsync(Token("gina", Roles.Runner), "run", script, "--file", data, "--", "--month", "11");

        Assert.Equal(7, code);
        Assert.Equal("rows 3 ['--month', '11']\n", stdout);
        Assert.Equal("warn\n", stderr);
    }

    [Fact]
    public async Task RunDownloadsTheArtifactsCheckedAgainstTheirDigests()
    {
        var script = Write("report.py", "import os\nos.makedirs('out/sub', exist_ok=True)\nopen('out/sub/summary.json', 'w').write('{\"ok\": true}')\n");
        var target = Path.Combine(_dir, "artifacts");

        var (code, _, stderr) = await CliAsync(Token("lena", Roles.Runner), "run", script, "--artifacts", target);

        Assert.True(code == 0, stderr);
        Assert.Equal("{\"ok\": true}", File.ReadAllText(Path.Combine(target, "sub", "summary.json")));
        Assert.Contains("sub/summary.json: 12 bytes, sha256 ", stderr);
    }

    [Fact]
    public async Task ARefusedRunExitsWith125AndSaysWhy()
    {
        var script = Write("hello.py", "print('hi')\n");

        var (code, _, stderr) = await CliAsync(Token("hank", Roles.Auditor), "run", script);

        Assert.Equal(CliApp.ServiceError, code);
        Assert.Contains("403", stderr);
        Assert.Contains("runner", stderr);
    }

    [Fact]
    public async Task ShowPrintsTheRecordedTimeline()
    {
        var token = Token("iris", Roles.Runner);
        var (_, json, _) = await CliAsync(token, "run", Write("t.sh", "echo timeline\n"), "--json");
        var runId = System.Text.Json.JsonDocument.Parse(json).RootElement.GetProperty("runId").GetString()!;

        var (code, stdout, _) = await CliAsync(token, "show", runId);

        Assert.Equal(0, code);
        Assert.Contains($"run {runId}  succeeded  exit 0", stdout);
        Assert.Contains("run_requested", stdout);
        Assert.Contains("run_completed", stdout);
    }

    [Fact]
    public async Task AnAuditorExportsWithTheCliAndVerifiesTheExportOffline()
    {
        await CliAsync(Token("jack", Roles.Runner), "run", Write("v.py", "print('to verify')\n"));
        var export = Path.Combine(_dir, "export.ndjson");

        var (exported, _, exportErrors) = await CliAsync(Token("kate", Roles.Auditor), "export", "-o", export);
        var (verified, verdict, _) = await CliAsync(null, "verify", export);
        var lines = File.ReadAllLines(export);
        File.WriteAllLines(export, lines.Select((l, i) => i == lines.Length / 2 ? l.Replace("\"version\":", "\"version\":9", StringComparison.Ordinal) : l));
        var (tampered, tamperedVerdict, _) = await CliAsync(null, "verify", export);

        Assert.True(exported == 0, exportErrors);
        Assert.Contains(lines, l => l.Contains("run_completed", StringComparison.Ordinal));
        Assert.True(verified == 0, verdict);
        Assert.Contains("VERIFIED", verdict);
        Assert.Equal(1, tampered);
        Assert.Contains("NOT VERIFIED", tamperedVerdict);
    }

    [Fact]
    public async Task WithoutATokenItSaysHowToGetOne()
    {
        var (code, _, stderr) = await CliAsync(null, "run", Write("x.py", "print(1)\n"));

        Assert.Equal(2, code);
        Assert.Contains("SBX_TOKEN", stderr);
    }

    private string Token(string subject, params string[] roles) => service.Token(subject, "tenant-cli", roles);

    private string Write(string name, string content)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllText(path, content);
        return path;
    }

    private async Task<(int Code, string Stdout, string Stderr)> CliAsync(string? token, params string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = _dir };
        start.ArgumentList.Add(typeof(CliApp).Assembly.Location);
        foreach (var arg in args)
            start.ArgumentList.Add(arg);
        start.Environment["SBX_URL"] = service.BaseUrl;
        start.Environment.Remove("SBX_TOKEN");
        start.Environment.Remove("SBX_TOKEN_FILE");
        if (token is not null)
            start.Environment["SBX_TOKEN"] = token;
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await stdout, await stderr);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
