using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Sandbox.Audited.Tests.Runs;

/// <summary>Small artifact caps so that "exceeded" is cheap to reach: 8 files, 1 MiB each, 2 MiB in all.</summary>
public sealed class ArtifactFixture : ServiceFixture
{
    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Executor:MaxArtifacts"] = "8",
        ["Executor:MaxArtifactBytes"] = "1048576",
        ["Executor:MaxArtifactsTotalBytes"] = "2097152",
        ["RateLimit:BurstLimit"] = "1000",
        ["RateLimit:TokensPerPeriod"] = "1000",
    };
}

[CollectionDefinition(Name)]
public sealed class ArtifactCollection : ICollectionFixture<ArtifactFixture>
{
    public const string Name = "artifacts";
}

[Collection(ArtifactCollection.Name)]
public sealed class ArtifactTests(ArtifactFixture service, ITestOutputHelper output)
{
    private const string Tenant = "tenant-artifacts";
    private readonly HttpClient _runner = service.Runner("ada", Tenant);

    private const string Report = """
        import csv, json, os
        rows = 0
        total = 0
        with open('tx.csv', newline='') as f:
            for row in csv.DictReader(f):
                rows += 1
                total += int(row['amount_cents'])
        os.makedirs('out', exist_ok=True)
        with open('out/summary.json', 'w') as out:
            json.dump({'rows': rows, 'total_cents': total}, out, sort_keys=True)
        print(rows)
        """;

    [Fact]
    public async Task CsvSentAsMultipartIsSummarisedIntoAnArtifactThatDownloadsByteIdentical()
    {
        var csv = new StringBuilder("id,account,amount_cents\n");
        long total = 0;
        for (var i = 0; i < 200_000; i++)
        {
            var cents = i % 9973 - 1000;
            total += cents;
            csv.Append(i).Append(",acct-").Append(i % 97).Append(',').Append(cents).Append('\n');
        }
        var csvBytes = Encoding.UTF8.GetBytes(csv.ToString());

        // What `curl -F language=python -F code=@report.py -F tx.csv=@tx.csv` sends.
        using var form = new MultipartFormDataContent
        {
            { new StringContent("python"), "language" },
            { new ByteArrayContent(Encoding.UTF8.GetBytes(Report)), "code", "report.py" },
            { new ByteArrayContent(csvBytes), "tx.csv", "tx.csv" },
        };
        var response = await _runner.PostAsync("/v1/runs", form);
        var body = await ApiCalls.BodyAsync(response);

        Assert.True(response.StatusCode == HttpStatusCode.OK, body.ToJsonString());
        Assert.Equal("succeeded", body.Str("status"));
        Assert.Equal("200000\n", body.Str("stdout.content"));
        var runId = body.Str("runId");

        var requested = await EventAsync(runId, "run_requested");
        var file = requested["data"]!["files"]!.AsArray().Single()!;
        Assert.Equal("tx.csv", file.Str("name"));
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(csvBytes)), file.Str("sha256"));
        Assert.Equal(csvBytes.Length.ToString(), file.Str("bytes"));

        var (listed, list) = await _runner.GetJsonAsync($"/v1/runs/{runId}/artifacts");
        Assert.Equal(HttpStatusCode.OK, listed.StatusCode);
        var summary = list.AsArray().Single()!;
        Assert.Equal("summary.json", summary.Str("name"));
        Assert.Equal("stored", summary.Str("status"));
        Assert.Equal("application/json", summary.Str("mediaType"));

        var download = await _runner.GetAsync(summary.Str("href"));
        Assert.Equal(HttpStatusCode.OK, download.StatusCode);
        var bytes = await download.Content.ReadAsByteArrayAsync();
        Assert.Equal($"{{\"rows\": 200000, \"total_cents\": {total}}}", Encoding.UTF8.GetString(bytes));
        Assert.Equal("application/json", download.Content.Headers.ContentType!.MediaType);
        var sha = SHA256.HashData(bytes);
        Assert.Equal($"sha-256=:{Convert.ToBase64String(sha)}:", download.Headers.GetValues("Repr-Digest").Single());
        Assert.Equal(Convert.ToHexStringLower(sha), summary.Str("sha256"));

        // Recorded before the terminal event, like the rest of the outcome.
        var types = (await EventsAsync(runId)).Select(e => e!.Str("type")).ToList();
        Assert.True(types.IndexOf("artifact_recorded") < types.IndexOf("run_completed"), string.Join(",", types));
    }

    [Fact]
    public async Task APandasReportInPythonDataReadsAnUploadedCsvAndWritesAnExcelArtifact()
    {
        const string code = """
            import os, pandas as pd
            tx = pd.read_csv('tx.csv')
            by = tx.groupby('account')['amount_cents'].sum().reset_index()
            os.makedirs('out', exist_ok=True)
            by.to_excel('out/by_account.xlsx', index=False)
            print(pd.__version__, len(tx), int(by['amount_cents'].sum()))
            """;
        using var form = new MultipartFormDataContent
        {
            { new StringContent("python"), "language" },
            { new StringContent("python-data"), "runtime" },
            { new StringContent(code), "code" },
            { new ByteArrayContent(Encoding.UTF8.GetBytes("id,account,amount_cents\n1,a,100\n2,b,250\n3,a,-40\n")), "tx.csv", "tx.csv" },
        };
        var response = await _runner.PostAsync("/v1/runs", form);
        var body = await ApiCalls.BodyAsync(response);

        Assert.True(response.StatusCode == HttpStatusCode.OK, body.ToJsonString());
        Assert.True(body.Str("status") == "succeeded", body.ToJsonString());
        Assert.EndsWith(" 3 310\n", body.Str("stdout.content"));
        var runId = body.Str("runId");
        Assert.Equal("python-data", (await EventAsync(runId, "sandbox_created"))["data"]!.Str("runtimeId"));
        var (_, list) = await _runner.GetJsonAsync($"/v1/runs/{runId}/artifacts");
        var workbook = list.AsArray().Single()!;
        Assert.Equal("by_account.xlsx", workbook.Str("name"));
        Assert.Equal("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", workbook.Str("mediaType"));
        var bytes = await _runner.GetByteArrayAsync(workbook.Str("href"));
        Assert.Equal("PK", Encoding.ASCII.GetString(bytes, 0, 2)); // an xlsx is a zip
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(bytes)), workbook.Str("sha256"));
    }

    [Fact]
    public async Task BinaryInputSentAsBase64RoundTripsThroughAnArtifact()
    {
        var binary = Enumerable.Range(0, 4096).Select(i => (byte)(i * 7 % 256)).ToArray();
        var (response, body) = await _runner.RunAsync(new
        {
            language = "python",
            code = "import shutil, os\nos.makedirs('out/copies')\nshutil.copyfile('blob.bin', 'out/copies/blob.bin')",
            files = new[] { new { name = "blob.bin", content = Convert.ToBase64String(binary), encoding = "base64" } },
        });
        Assert.True(response.StatusCode == HttpStatusCode.OK, body.ToJsonString());
        Assert.Equal("succeeded", body.Str("status"));

        var download = await _runner.GetAsync($"/v1/runs/{body.Str("runId")}/artifacts/copies/blob.bin");
        Assert.Equal(HttpStatusCode.OK, download.StatusCode);
        Assert.Equal(binary, await download.Content.ReadAsByteArrayAsync());
        Assert.Equal("application/octet-stream", download.Content.Headers.ContentType!.MediaType);
    }

    [Fact]
    public async Task InvalidBase64IsRefusedBeforeAnythingRuns()
    {
        var (response, body) = await _runner.RunAsync(new
        {
            language = "python",
            code = "print(1)",
            files = new[] { new { name = "blob.bin", content = "not base64!", encoding = "base64" } },
        });
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("base64", body.Str("detail"));
    }

    [Fact]
    public async Task LinksFifosAndOverCapFilesAreRecordedButNotKept()
    {
        var code = """
            mkdir -p out/sub
            echo kept > out/sub/kept.txt
            ln -s /etc/passwd out/link
            mkfifo out/pipe
            head -c 1100000 /dev/zero > out/big.bin
            """;
        var (response, body) = await _runner.RunAsync(new { language = "shell", code });
        Assert.True(response.StatusCode == HttpStatusCode.OK, body.ToJsonString());
        var runId = body.Str("runId");

        var (_, list) = await _runner.GetJsonAsync($"/v1/runs/{runId}/artifacts");
        var byName = list.AsArray().ToDictionary(a => a!.Str("name"), a => a!);
        output.WriteLine(list.ToJsonString());
        Assert.Equal("stored", byName["sub/kept.txt"].Str("status"));
        Assert.Equal(("skipped", "symlink"), (byName["link"].Str("status"), byName["link"].Str("reason")));
        Assert.Equal(("skipped", "fifo"), (byName["pipe"].Str("status"), byName["pipe"].Str("reason")));
        Assert.Equal(("exceeded", "file_cap"), (byName["big.bin"].Str("status"), byName["big.bin"].Str("reason")));
        Assert.Equal("", byName["link"].Str("href"));

        var kept = await _runner.GetAsync($"/v1/runs/{runId}/artifacts/sub/kept.txt");
        Assert.Equal("kept\n", await kept.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.NotFound, (await _runner.GetAsync($"/v1/runs/{runId}/artifacts/link")).StatusCode);
    }

    [Fact]
    public async Task ArtifactNamesCannotEscapeTheRun()
    {
        var (_, body) = await _runner.RunAsync(new { language = "shell", code = "mkdir out/a && echo x > out/a/x.txt" });
        var runId = body.Str("runId");
        foreach (var name in new[] { "a%2F..%2F..%2F..%2Fetc%2Fpasswd", "..%2F..%2Fevents", "%2E%2E%2Fa%2Fx.txt", "a%2F.%2Fx.txt" })
        {
            var response = await _runner.GetAsync($"/v1/runs/{runId}/artifacts/{name}");
            Assert.True(response.StatusCode == HttpStatusCode.NotFound, $"{name}: {response.StatusCode}");
        }
        Assert.Equal(HttpStatusCode.OK, (await _runner.GetAsync($"/v1/runs/{runId}/artifacts/a/x.txt")).StatusCode);
    }

    [Fact]
    public async Task AuditorsReadArtifactsOfTheirTenantAndEachReadIsLogged()
    {
        var (_, body) = await _runner.RunAsync(new { language = "shell", code = "echo secret > out/r.txt" });
        var runId = body.Str("runId");
        var auditor = service.Client(service.Token("audrey", Tenant, Roles.Auditor));
        var stranger = service.Runner("mallory", "tenant-other");

        Assert.Equal(HttpStatusCode.OK, (await auditor.GetAsync($"/v1/runs/{runId}/artifacts/r.txt")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await stranger.GetAsync($"/v1/runs/{runId}/artifacts/r.txt")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await stranger.GetAsync($"/v1/runs/{runId}/artifacts")).StatusCode);

        Assert.Equal(HttpStatusCode.OK, (await _runner.GetAsync($"/v1/runs/{runId}/artifacts/r.txt")).StatusCode); // one's own: not logged

        var (_, log) = await auditor.GetJsonAsync("/v1/audit/events?type=audit_accessed");
        var reads = log["items"]!.AsArray().Where(e => e!.Str("data.filter.runId") == runId).ToList();
        Assert.Equal(["read_artifact"], reads.Select(e => e!.Str("data.action")));
        Assert.Equal(("audrey", "ada"), (reads[0]!.Str("data.caller.subject"), reads[0]!.Str("data.filter.subject")));
    }

    [Fact]
    public async Task InputsLargerThanTheSandboxTmpAreRefusedBeforeAnythingRuns()
    {
        using var form = new MultipartFormDataContent
        {
            { new StringContent("python"), "language" },
            { new StringContent("print(1)"), "code" },
            { new StreamContent(new GeneratedStream(20 * 1024 * 1024)), "big.bin", "big.bin" },
        };
        var response = await _runner.PostAsync("/v1/runs", form);
        var body = await ApiCalls.BodyAsync(response);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Contains("tmpfsMb", body.Str("detail"));
    }

    private async Task<List<JsonNode?>> EventsAsync(string runId)
    {
        var (_, events) = await _runner.GetJsonAsync($"/v1/runs/{runId}/events");
        return events.AsArray().ToList();
    }

    private async Task<JsonNode> EventAsync(string runId, string type) =>
        (await EventsAsync(runId)).Single(e => e!.Str("type") == type)!;
}

/// <summary>A stream of the given length made up as it is read: a large upload without a large buffer in the test.</summary>
internal sealed class GeneratedStream(long length) : Stream
{
    private long _position;

    public override int Read(byte[] buffer, int offset, int count)
    {
        var n = (int)Math.Min(count, length - _position);
        for (var i = 0; i < n; i++)
            buffer[offset + i] = (byte)('a' + (_position + i) % 26);
        _position += n;
        return n;
    }

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => length;
    public override long Position { get => _position; set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
