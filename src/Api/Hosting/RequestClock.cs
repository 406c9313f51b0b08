using System.Diagnostics;

namespace Sandbox.Audited.Api.Hosting;

/// <summary>When a request reached the service: the first step of its pipeline, so a run's Server-Timing can say how long it
/// took before the run was recorded ("admit": reading the body, authentication, the rate limiter, validation and an
/// Idempotency-Key's claim).</summary>
public static class RequestClock
{
    private static readonly object Key = new();

    public static IApplicationBuilder UseRequestClock(this IApplicationBuilder app) => app.Use((http, next) =>
    {
        http.Items[Key] = Stopwatch.GetTimestamp();
        return next(http);
    });

    /// <summary>Milliseconds since the request reached the service (0 when the clock middleware did not see it).</summary>
    public static double ElapsedMs(HttpContext http) =>
        http.Items.TryGetValue(Key, out var start) && start is long started ? Stopwatch.GetElapsedTime(started).TotalMilliseconds : 0;
}
