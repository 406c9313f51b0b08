using System.Diagnostics;
using System.Net;
using System.Text.RegularExpressions;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Api;

/// <summary>/metrics as a Prometheus server sees it: valid exposition (promtool), and a fixed set of series.</summary>
[Collection(ApiCollection.Name)]
public sealed partial class MetricsTests(ApiFixture service)
{
    private const string Tenant = "tenant-metrics";

    [Fact]
    public async Task MetricsCountRunsByStatusAndLanguageWithRuntimeAndProcessMetrics()
    {
        await service.Runner("mia", Tenant).RunAsync(new { language = "shell", code = "exit 4" });

        string text = "";
        await Eventually.WaitUntilAsync(async () =>
        {
            var response = await service.Client().GetAsync("/metrics");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.StartsWith("text/plain", response.Content.Headers.ContentType?.MediaType);
            text = await response.Content.ReadAsStringAsync();
            return SeriesMatching(text, "sandbox_runs_total").Any(s => s.Contains("language=\"shell\"") && s.Contains("status=\"failed\""));
        }, () => "no sandbox_runs_total{status=failed,language=shell} in:\n" + text, TimeSpan.FromSeconds(10));

        Assert.Contains(SeriesMatching(text, "sandbox_run_duration_seconds_bucket"), s => s.Contains("language=\"shell\"") && s.Contains("le=\"+Inf\""));
        Assert.Contains("# TYPE sandbox_admission_queue_depth gauge", text);
        Assert.Contains(SeriesMatching(text, "sandbox_pool_size"), s => s.Contains("language=\"python\""));
        Assert.Contains(SeriesMatching(text, "http_server_request_duration_seconds_count"),
            s => s.Contains("http_route=\"/v1/runs/\"") && s.Contains("http_request_method=\"POST\"") && s.Contains("http_response_status_code=\"200\""));
        Assert.NotEmpty(SeriesMatching(text, "dotnet_gc_collections_total"));
        Assert.NotEmpty(SeriesMatching(text, "process_cpu_time_seconds_total"));
    }

    [Fact]
    public async Task PromtoolAcceptsTheExposition()
    {
        var promtool = Promtool();
        await service.Runner("milo", Tenant).RunAsync(new { language = "python", code = "print(1)" });
        var text = await service.Client().GetStringAsync("/metrics");

        var start = new ProcessStartInfo(promtool, ["check", "metrics"])
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true,
        };
        using var process = Process.Start(start)!;
        await process.StandardInput.WriteAsync(text);
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync(new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token);

        Assert.True(process.ExitCode == 0, $"promtool check metrics exited {process.ExitCode}:\n{await stdout}\n{await stderr}");
        Assert.Contains("sandbox_runs_total", text);
    }

    [Fact]
    public async Task UnknownMethodsLanguagesAndPathsDoNotGrowTheSeries()
    {
        var client = service.Client();
        var batch = 0;

        async Task<int> SendOddRequestsAsync()
        {
            batch++;
            var tag = Guid.NewGuid().ToString("N")[..8];
            for (var i = 0; i < 3; i++)
            {
                await client.SendAsync(new HttpRequestMessage(new HttpMethod($"BREW{tag}{i}".ToUpperInvariant()), "/v1/runs"));
                await client.GetAsync($"/no/such/path/{tag}{i}");
                var (response, _) = await service.Runner($"odd-{tag}-{i}", Tenant).RunAsync(new { language = $"cobol-{tag}-{i}", code = "x" });
                Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            }
            return batch * 3;
        }

        async Task<string> ScrapeAfterAsync(int rejections)
        {
            var text = "";
            await Eventually.WaitUntilAsync(async () =>
            {
                text = await client.GetStringAsync("/metrics");
                // ASP.NET Core records a request's duration after the response has gone out, so the client can
                // scrape before its own odd requests are counted; wait for all three kinds.
                var requests = SeriesMatching(text, "http_server_request_duration_seconds_count").ToList();
                return Sum(SeriesMatching(text, "sandbox_rejections_total").Where(s => s.Contains("reason=\"invalid_request\""))) >= rejections
                    && Sum(requests.Where(s => s.Contains("http_request_method=\"_OTHER\""))) >= rejections
                    && Sum(requests.Where(s => !s.Contains("http_route=") && s.Contains("http_response_status_code=\"404\""))) >= rejections;
            }, () => $"the odd requests of batch {batch} were not counted:\n{text}", TimeSpan.FromSeconds(10));
            return text;
        }

        var before = await ScrapeAfterAsync(await SendOddRequestsAsync());
        var after = await ScrapeAfterAsync(await SendOddRequestsAsync());

        // Other tests' runs may add series with known labels meanwhile; the odd requests' series must not grow.
        var seriesBefore = Series(before).Where(Bounded).Where(FromOddRequests).ToHashSet();
        var seriesAfter = Series(after).Where(Bounded).Where(FromOddRequests).ToHashSet();
        Assert.NotEmpty(seriesBefore);
        Assert.Empty(seriesAfter.Except(seriesBefore));
        Assert.DoesNotContain("BREW", after);
        Assert.DoesNotContain("cobol", after);
        Assert.DoesNotContain("/no/such/path", after);
        Assert.Contains(SeriesMatching(after, "http_server_request_duration_seconds_count"), s => s.Contains("http_request_method=\"_OTHER\""));
    }

    private static double Sum(IEnumerable<string> samples) =>
        samples.Select(s => double.Parse(s[(s.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture)).Sum();

    // Where the odd requests land: the folded language and method, and HTTP requests that matched no route.
    private static bool FromOddRequests(string series) =>
        series.Contains("language=\"other\"", StringComparison.Ordinal) || series.Contains("\"_OTHER\"", StringComparison.Ordinal)
        || (series.StartsWith("http_server_", StringComparison.Ordinal) && !series.Contains("http_route=", StringComparison.Ordinal));

    // The families a client's request could add series to: the service's own and ASP.NET Core's HTTP metrics.
    private static bool Bounded(string series) => series.StartsWith("sandbox_", StringComparison.Ordinal) || series.StartsWith("http_server_", StringComparison.Ordinal);

    /// <summary>Each sample line without its value (and timestamp): the series' name and labels.</summary>
    private static IEnumerable<string> Series(string text) =>
        text.Split('\n').Where(l => l.Length > 0 && l[0] != '#').Select(l => SampleValue().Replace(l, ""));

    private static IEnumerable<string> SeriesMatching(string text, string name) =>
        text.Split('\n').Where(l => l.StartsWith(name + "{", StringComparison.Ordinal) || l.StartsWith(name + " ", StringComparison.Ordinal));

    private static string Promtool()
    {
        var candidates = new[]
        {
            Environment.GetEnvironmentVariable("SBX_PROMTOOL"),
            Path.Combine(TestEnvironment.RepoRoot, ".build", "tools", "promtool"),
            "/usr/bin/promtool",
        };
        return candidates.FirstOrDefault(p => !string.IsNullOrEmpty(p) && File.Exists(p))
            ?? throw new InvalidOperationException("promtool is missing: ./sbx test extracts it from Debian's prometheus package into .build/tools.");
    }

    [GeneratedRegex(@" [^ ]+( [0-9]+)?$")]
    private static partial Regex SampleValue();
}
