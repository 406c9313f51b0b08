using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;
using Sandbox.Audited.Api.Metrics;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Api;

/// <summary>
/// Two hosts in one process, each with the service's metrics wiring (as the tests run them): each host's /metrics
/// counts its own requests only, and keeps its series when the other host stops. OpenTelemetry subscribes to meters
/// by name, process-wide, and would otherwise merge both hosts' instruments into one series and drop it with the first.
/// </summary>
public sealed class MetricsIsolationTests
{
    [Fact]
    public async Task EachHostCountsOnlyItsOwnRequestsAndKeepsItsSeriesWhenAnotherHostStops()
    {
        var first = await StartAsync(running: 7);
        await using var second = await StartAsync(running: 9);
        using var firstClient = first.GetTestClient();
        using var client = second.GetTestClient();
        await firstClient.GetAsync("/ping");
        await client.GetAsync("/ping");

        var before = await client.GetStringAsync("/metrics");
        Assert.Equal(["9"], Values(before, "sandbox_admission_running{"));
        Assert.Equal(["1"], Values(before, "http_server_request_duration_seconds_count{", "http_route=\"/ping\""));

        await first.DisposeAsync();
        await client.GetAsync("/ping");
        // The exporter answers a scrape from its cache for a short while: wait for a fresh one.
        var after = before;
        await Eventually.WaitUntilAsync(async () => (after = await client.GetStringAsync("/metrics")) != before,
            () => "/metrics did not change", TimeSpan.FromSeconds(10));
        Assert.Equal(["9"], Values(after, "sandbox_admission_running{"));
        Assert.Equal(["2"], Values(after, "http_server_request_duration_seconds_count{", "http_route=\"/ping\""));
    }

    private static string[] Values(string text, string series, string label = "") =>
        text.Split('\n').Where(l => l.StartsWith(series, StringComparison.Ordinal) && l.Contains(label, StringComparison.Ordinal))
            .Select(l => l[(l.LastIndexOf(' ') + 1)..]).ToArray();

    private static async Task<WebApplication> StartAsync(int running)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseTestServer();
        builder.Services.AddServiceMetrics();
        var app = builder.Build();
        app.Services.GetRequiredService<RunMetrics>().Watch(() => 0, () => running, _ => 0, () => 0);
        app.MapGet("/ping", () => "pong");
        app.MapPrometheusScrapingEndpoint("/metrics");
        await app.StartAsync();
        return app;
    }
}
