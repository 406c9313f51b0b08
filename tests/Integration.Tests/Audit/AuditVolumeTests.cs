using System.Diagnostics;
using Sandbox.Audited.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Sandbox.Audited.Tests.Audit;

/// <summary>A database of its own holding 100,000 events (12,500 runs) in one tenant.</summary>
public sealed class AuditVolumeFixture : ServiceFixture, IAsyncLifetime
{
    public const int Runs = 12_500;
    public const string Tenant = "volume";

    async Task IAsyncLifetime.InitializeAsync()
    {
        await InitializeAsync();
        await AuditSeed.BulkAsync(this, Tenant, Runs);
    }
}

// Alone, after the parallel collections: the export's memory is measured on the test process's heap, which other
// collections' services would otherwise grow at the same time.
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class AuditVolumeCollection : ICollectionFixture<AuditVolumeFixture>
{
    public const string Name = "audit-volume";
}

/// <summary>Figures are printed, never asserted on time; memory is asserted only against the export's own size.</summary>
[Collection(AuditVolumeCollection.Name)]
public sealed class AuditVolumeTests(AuditVolumeFixture service, ITestOutputHelper output)
{
    [Fact]
    public async Task VerifyingOneHundredThousandEventsReportsThroughput()
    {
        var auditor = service.Auditor(AuditVolumeFixture.Tenant);
        await auditor.GetJsonAsync("/v1/audit/verify?runId=" + Guid.NewGuid()); // warm-up (404 is fine)
        // A small real verification first, so the measured one runs compiled code rather than the first call's JIT.
        await auditor.OkJsonAsync("/v1/audit/verify?fromSequence=1&toSequence=2000");

        var report = await auditor.OkJsonAsync("/v1/audit/verify");

        Assert.True(report["verified"]!.GetValue<bool>());
        Assert.True(report["eventsChecked"]!.GetValue<long>() >= 100_000);
        output.WriteLine($"verify: {report["eventsChecked"]} events, {report["streamsChecked"]} streams in {report["elapsedMs"]} ms = {report["eventsPerSecond"]} events/s");
    }

    [Theory]
    [InlineData("ndjson")]
    [InlineData("csv")]
    public async Task ExportingOneHundredThousandEventsStreamsInConstantMemory(string format)
    {
        var auditor = service.Auditor(AuditVolumeFixture.Tenant);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        var heapBefore = GC.GetTotalMemory(forceFullCollection: true);
        var rssBefore = Process.GetCurrentProcess().WorkingSet64;
        long heapPeak = heapBefore, rssPeak = rssBefore;
        using var sampling = new CancellationTokenSource();
        // Live memory, not garbage: each sample collects first. Without that the figure is mostly the allocation budget
        // of gen0 (which depends on the machine's cache size) and whatever the tests running next to this one allocate.
        var sampler = Task.Run(async () =>
        {
            while (!sampling.IsCancellationRequested)
            {
                heapPeak = Math.Max(heapPeak, GC.GetTotalMemory(forceFullCollection: true));
                rssPeak = Math.Max(rssPeak, Process.GetCurrentProcess().WorkingSet64);
                await Task.Delay(100);
            }
        });

        var clock = Stopwatch.StartNew();
        using var response = await auditor.GetAsync($"/v1/audit/export?format={format}", HttpCompletionOption.ResponseHeadersRead);
        Assert.True(response.IsSuccessStatusCode);
        await using var body = await response.Content.ReadAsStreamAsync();
        long bytes = 0, lines = 0;
        var buffer = new byte[64 * 1024];
        int read;
        while ((read = await body.ReadAsync(buffer)) > 0)
        {
            bytes += read;
            lines += buffer.AsSpan(0, read).Count((byte)'\n');
        }
        clock.Stop();
        await sampling.CancelAsync();
        await sampler;

        var events = format == "csv" ? lines - 1 : lines;
        Assert.True(events >= 100_000, $"{events} events exported");
        output.WriteLine($"export {format}: {events} events, {bytes / 1048576.0:F1} MiB in {clock.ElapsedMilliseconds} ms; " +
            $"managed heap before {heapBefore / 1048576.0:F1} MiB, peak {heapPeak / 1048576.0:F1} MiB (+{(heapPeak - heapBefore) / 1048576.0:F1}); " +
            $"RSS before {rssBefore / 1048576.0:F1} MiB, peak {rssPeak / 1048576.0:F1} MiB (+{(rssPeak - rssBefore) / 1048576.0:F1})");
        // Streaming, not buffering: the live heap never grows by more than a fraction of what was sent.
        Assert.True(heapPeak - heapBefore < bytes / 4, $"heap grew {heapPeak - heapBefore} bytes for a {bytes}-byte export");
    }
}
