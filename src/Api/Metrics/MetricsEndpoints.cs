using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using Sandbox.Audited.Api.Runs;
using Sandbox.Audited.Api.Streaming;
using Sandbox.Audited.Executor.Pool;

namespace Sandbox.Audited.Api.Metrics;

public static class MetricsEndpoints
{
    /// <summary>
    /// OpenTelemetry metrics exported in the Prometheus text format: the service's meter, ASP.NET Core's HTTP server
    /// metrics (labelled by route template and a fixed method set, never the raw path), .NET runtime and process.
    /// </summary>
    public static IServiceCollection AddServiceMetrics(this IServiceCollection services)
    {
        services.AddSingleton<RunMetrics>();
        services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService("sandbox-audited"))
            .WithMetrics(metrics => metrics
                .AddMeter(RunMetrics.MeterName)
                .AddAspNetCoreInstrumentation()
                .AddRuntimeInstrumentation()
                .AddProcessInstrumentation()
                .AddPrometheusExporter());
        // Prometheus keeps "_count" for histograms: these gauges of the runtime and process conventions are renamed so
        // that promtool's lint accepts the exposition.
        services.ConfigureOpenTelemetryMeterProvider(metrics =>
        {
            foreach (var (instrument, name) in Renamed)
                metrics.AddView(instrument, name);
        });
        return services;
    }

    private static readonly (string Instrument, string Name)[] Renamed =
    [
        ("dotnet.assembly.count", "dotnet.assemblies"),
        ("dotnet.process.cpu.count", "dotnet.process.cpus"),
        ("dotnet.timer.count", "dotnet.timers"),
        ("process.thread.count", "process.threads"),
        ("process.unix.file_descriptor.count", "process.unix.file_descriptors"),
    ];

    /// <summary>GET /metrics: unauthenticated like /healthz (scrapers sit next to the service).</summary>
    public static void MapMetrics(this WebApplication app)
    {
        var admission = app.Services.GetRequiredService<Admission>();
        var pool = app.Services.GetRequiredService<SandboxPool>();
        var feed = app.Services.GetRequiredService<RunFeed>();
        app.Services.GetRequiredService<RunMetrics>().Watch(() => admission.Queued, () => admission.Running, language => pool.SizeOf(language, Domain.Runtimes.Isolation.Standard), () => feed.Subscribers);
        app.MapPrometheusScrapingEndpoint("/metrics").AllowAnonymous();
    }
}
