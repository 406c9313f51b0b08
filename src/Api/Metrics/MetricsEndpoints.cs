using Sandbox.Audited.Api.Runs;
using Sandbox.Audited.Api.Streaming;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Executor.Pool;

namespace Sandbox.Audited.Api.Metrics;

public static class MetricsEndpoints
{
    /// <summary>Times every request by its route pattern (never the raw path, which would carry run ids).</summary>
    public static IApplicationBuilder UseRequestMetrics(this IApplicationBuilder app) => app.Use(async (http, next) =>
    {
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        try
        {
            await next(http);
        }
        finally
        {
            var route = (http.GetEndpoint() as RouteEndpoint)?.RoutePattern.RawText ?? "unmatched";
            http.RequestServices.GetRequiredService<RunMetrics>().ObserveHttp(http.Request.Method, route, http.Response.StatusCode,
                System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalSeconds);
        }
    });

    /// <summary>GET /metrics: Prometheus text format, unauthenticated like /healthz (scrapers sit next to the service).</summary>
    public static void MapMetrics(this IEndpointRouteBuilder app) =>
        app.MapGet("/metrics", (RunMetrics metrics, Admission admission, SandboxPool pool, RunFeed feed) =>
        {
            var text = metrics.Render(
            [
                ("sandbox_admission_queue_depth", "Runs waiting for a sandbox slot.", [("", admission.Queued)]),
                ("sandbox_admission_running", "Runs holding a sandbox slot.", [("", admission.Running)]),
                ("sandbox_pool_size", "Warm sandboxes ready to take a run, by language.",
                    Languages.All.Select(l => ($"language=\"{l}\"", (double)pool.SizeOf(l, Domain.Runtimes.Isolation.Standard))).ToList()),
                ("sandbox_stream_subscribers", "Open GET /v1/runs/{id}/stream connections.", [("", feed.Subscribers)]),
            ]);
            return Results.Text(text, "text/plain; version=0.0.4; charset=utf-8");
        }).AllowAnonymous().ExcludeFromDescription();
}
