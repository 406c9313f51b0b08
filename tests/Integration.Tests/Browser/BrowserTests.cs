using System.Diagnostics;
using System.Text;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Browser;

/// <summary>
/// Runs the browser tests in tests/browser (node --test, playwright-core driving Debian's Chromium) against the
/// real service. Screenshots land in artifacts/browser/. `./sbx test` installs Chromium and the node packages.
/// </summary>
[Collection(BrowserCollection.Name)]
public sealed class BrowserTests(BrowserFixture service)
{
    private const string Tenant = "tenant-browser";

    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(5);

    [Theory]
    [InlineData("playground.test.mjs")]
    [InlineData("audit.test.mjs")]
    [InlineData("chain.test.mjs")]
    [InlineData("docs.test.mjs")]
    public async Task BrowserTestFilePasses(string file)
    {
        var directory = Path.Combine(TestEnvironment.RepoRoot, "tests", "browser");
        var chromium = Environment.GetEnvironmentVariable("SBX_CHROMIUM") ?? "/usr/bin/chromium";
        Assert.True(File.Exists(chromium), $"{chromium} is missing: `apt-get install chromium` (./sbx test does).");
        Assert.True(Directory.Exists(Path.Combine(directory, "node_modules", "playwright-core")),
            "tests/browser/node_modules is missing: `npm ci` in tests/browser (./sbx test does).");
        Assert.True(File.Exists(Path.Combine(TestEnvironment.RepoRoot, "src", "Api", "wwwroot", "index.html")),
            "src/Api/wwwroot is not built: `npm ci && npm run build` in web/ (./sbx does).");

        var start = new ProcessStartInfo("node", ["--test", "--test-reporter=spec", file])
        {
            WorkingDirectory = directory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.Environment["SBX_BASE_URL"] = service.BaseUrl;
        start.Environment["SBX_TENANT"] = Tenant;
        start.Environment["SBX_RUNNER_TOKEN"] = service.Token("browser-runner", Tenant, Roles.Runner);
        start.Environment["SBX_AUDITOR_TOKEN"] = service.Token("browser-auditor", Tenant, Roles.Auditor);
        start.Environment["SBX_BROWSER_ARTIFACTS"] = Path.Combine(TestEnvironment.RepoRoot, "artifacts", "browser");
        start.Environment["SBX_CHROMIUM"] = chromium;

        using var node = Process.Start(start) ?? throw new InvalidOperationException("node did not start");
        var output = new StringBuilder();
        node.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        node.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        node.BeginOutputReadLine();
        node.BeginErrorReadLine();
        using var timeout = new CancellationTokenSource(Timeout);
        try
        {
            await node.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            node.Kill(entireProcessTree: true);
            Assert.Fail($"node --test {file} did not finish within {Timeout}:\n{output}");
        }
        node.WaitForExit();
        Assert.True(node.ExitCode == 0, $"node --test {file} exited with {node.ExitCode}:\n{output}");
    }
}
