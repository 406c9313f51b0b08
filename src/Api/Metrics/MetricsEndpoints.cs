using System.Diagnostics.Metrics;
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
        services.ConfigureOpenTelemetryMeterProvider((provider, metrics) =>
        {
            foreach (var (instrument, name) in Renamed)
                metrics.AddView(instrument, name);
            metrics.AddView(OnlyMetersOf(provider.GetRequiredService<IMeterFactory>()));
        });
        return services;
    }

    /// <summary>
    /// A view that drops instruments of meters made by another host's meter factory. OpenTelemetry subscribes to
    /// meters by name, process-wide, and merges instruments of the same name into the metric stream of the first it saw;
    /// with two hosts in one process (tests, or a host restarted in place) a host's /metrics would count the other's
    /// requests and runs, and would lose those series when the other host stopped. Meters made without a factory (the
    /// runtime's and the process's) are shared by nature and kept.
    /// </summary>
    public static Func<Instrument, MetricStreamConfiguration?> OnlyMetersOf(IMeterFactory own) =>
        instrument => instrument.Meter.Scope is IMeterFactory scope && !ReferenceEquals(scope, own) ? MetricStreamConfiguration.Drop : null;

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
