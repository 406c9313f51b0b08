using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json.Nodes;

namespace Sandbox.Audited.Bench;

/// <summary>A data run: 20 MiB in as a multipart file, 5 MiB out as an artifact, downloaded and checked.</summary>
public sealed record DataRunFigures(int Runs, double P50Ms, double RunsPerSecond, double InputMiBPerSecond,
    double ServiceRssBeforeMb, double ServiceRssPeakMb, bool AllIdentical);

public static class DataRuns
{
    public const int InputBytes = 20 * 1024 * 1024;
    public const int ArtifactBytes = 5 * 1024 * 1024;

    // Reads the whole input (so the run pays for it), then writes a 5 MiB artifact derived from it.
    private const string Code = """
        import hashlib, os
        h = hashlib.sha256()
        with open('tx.csv', 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):
                h.update(block)
        with open('out/report.bin', 'wb') as out:
            out.write(h.digest() * (5 * 1024 * 1024 // 32))
        print(h.hexdigest())
        """;

    public static async Task<DataRunFigures> MeasureAsync(HttpClient http, int servicePid, int runs)
    {
        var rssBefore = RssMb(servicePid);
        var peak = rssBefore;
        using var sampling = new CancellationTokenSource();
        var sampler = Task.Run(async () =>
        {
            while (!sampling.IsCancellationRequested)
            {
                peak = Math.Max(peak, RssMb(servicePid));
                await Task.Delay(20);
            }
        });
        var times = new List<double>();
        var identical = true;
        var total = Stopwatch.StartNew();
        for (var i = 0; i < runs; i++)
        {
            var watch = Stopwatch.StartNew();
            using var form = new MultipartFormDataContent
            {
                { new StringContent("python"), "language" },
                { new StringContent(Code), "code" },
                { new StringContent("""{"tmpfsMb":64,"timeoutMs":30000}"""), "limits" },
                { new StreamContent(new Generated(InputBytes)), "tx.csv", "tx.csv" },
            };
            using var response = await http.PostAsync("/v1/runs", form);
            var body = JsonNode.Parse(await response.Content.ReadAsStringAsync());
            var runId = body?["runId"]?.ToString();
            if (!response.IsSuccessStatusCode || body?["status"]?.ToString() != "succeeded")
                throw new InvalidOperationException($"data run failed: {(int)response.StatusCode} {body?.ToJsonString()}");
            using var download = await http.GetAsync($"/v1/runs/{runId}/artifacts/report.bin", HttpCompletionOption.ResponseHeadersRead);
            await using var stream = await download.Content.ReadAsStreamAsync();
            var sha = await SHA256.HashDataAsync(stream);
            identical &= download.Headers.TryGetValues("Repr-Digest", out var digest)
                && digest.Single() == $"sha-256=:{Convert.ToBase64String(sha)}:";
            times.Add(watch.Elapsed.TotalMilliseconds);
        }
        var seconds = total.Elapsed.TotalSeconds;
        await sampling.CancelAsync();
        await sampler;
        times.Sort();
        return new DataRunFigures(runs, times[times.Count / 2], runs / seconds, runs * (InputBytes / 1048576.0) / seconds,
            rssBefore, peak, identical);
    }

    private static double RssMb(int pid)
    {
        var line = File.ReadLines($"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith("VmRSS:", StringComparison.Ordinal));
        return line is null ? double.NaN : double.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024;
    }

    /// <summary>CSV-like bytes made up as they are read: the benchmark holds no 20 MiB buffer of its own.</summary>
    private sealed class Generated(long length) : Stream
    {
        private long _position;

        public override int Read(byte[] buffer, int offset, int count)
        {
            var n = (int)Math.Min(count, length - _position);
            for (var i = 0; i < n; i++)
                buffer[offset + i] = (_position + i) % 32 == 31 ? (byte)'\n' : (byte)('0' + (_position + i) % 10);
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
}
