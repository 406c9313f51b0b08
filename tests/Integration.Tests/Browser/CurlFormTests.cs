using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Browser;

/// <summary>The multipart form as the real curl sends it, against the service on a Kestrel port.</summary>
[Collection(BrowserCollection.Name)]
public sealed class CurlFormTests(BrowserFixture service)
{
    [Fact]
    public async Task CurlDashFUploadRunsAndItsArtifactDownloadsWithItsDigest()
    {
        var directory = Directory.CreateTempSubdirectory("sbx-curl-");
        try
        {
            await File.WriteAllTextAsync(Path.Combine(directory.FullName, "report.py"),
                "import csv, json\nrows = list(csv.DictReader(open('tx.csv')))\n"
                + "json.dump({'rows': len(rows), 'total': sum(int(r['amount']) for r in rows)}, open('out/summary.json', 'w'))\n");
            await File.WriteAllTextAsync(Path.Combine(directory.FullName, "tx.csv"),
                "id,amount\n" + string.Concat(Enumerable.Range(1, 1000).Select(i => $"{i},{i}\n")));
            var token = service.Token("curl-user", "tenant-curl", Roles.Runner);

            var run = JsonNode.Parse(await CurlAsync(directory.FullName,
                "-sS", "-H", $"Authorization: Bearer {token}", "-F", "language=python", "-F", "code=@report.py", "-F", "tx.csv=@tx.csv",
                $"{service.BaseUrl}/v1/runs"))!;
            Assert.True(run.Str("status") == "succeeded", run.ToJsonString());

            var headers = Path.Combine(directory.FullName, "headers.txt");
            var summary = Path.Combine(directory.FullName, "summary.json");
            await CurlAsync(directory.FullName, "-sS", "-f", "-D", headers, "-o", summary, "-H", $"Authorization: Bearer {token}",
                $"{service.BaseUrl}/v1/runs/{run.Str("runId")}/artifacts/summary.json");
            var bytes = await File.ReadAllBytesAsync(summary);
            Assert.Equal("{\"rows\": 1000, \"total\": 500500}", Encoding.UTF8.GetString(bytes));
            var digest = (await File.ReadAllLinesAsync(headers)).Single(l => l.StartsWith("repr-digest:", StringComparison.OrdinalIgnoreCase));
            Assert.Equal($"sha-256=:{Convert.ToBase64String(SHA256.HashData(bytes))}:", digest[(digest.IndexOf(':') + 1)..].Trim());
        }
        finally
        {
            directory.Delete(recursive: true);
        }
    }

    private static async Task<string> CurlAsync(string directory, params string[] args)
    {
        var start = new ProcessStartInfo("curl", args) { WorkingDirectory = directory, RedirectStandardOutput = true, RedirectStandardError = true };
        using var curl = Process.Start(start) ?? throw new InvalidOperationException("curl did not start");
        var output = curl.StandardOutput.ReadToEndAsync();
        var error = curl.StandardError.ReadToEndAsync();
        await curl.WaitForExitAsync();
        Assert.True(curl.ExitCode == 0, $"curl exited with {curl.ExitCode}: {await error}");
        return await output;
    }
}
