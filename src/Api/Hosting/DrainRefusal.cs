using Sandbox.Audited.Api.Runs;

namespace Sandbox.Audited.Api.Hosting;

/// <summary>
/// A node that has begun draining (SIGTERM) answers a request that would start a run with 503 and Retry-After before
/// anything of it is read, recorded or counted against the caller's rate limit: the run is not recorded, so sending it
/// again (to another node, or to this one once it is back) cannot run it twice. Reads and streams are still served.
/// </summary>
public static class DrainRefusal
{
    /// <summary>Seconds a refused client waits: about what a node of this service needs to restart.</summary>
    public const int RetryAfterSeconds = 5;

    /// <summary>Endpoint metadata: the endpoint records and starts a run.</summary>
    public sealed class StartsRun
    {
        public static readonly StartsRun Instance = new();
    }

    public static TBuilder RefusedWhileDraining<TBuilder>(this TBuilder builder) where TBuilder : IEndpointConventionBuilder =>
        builder.WithMetadata(StartsRun.Instance);

    public static IApplicationBuilder UseDrainRefusal(this IApplicationBuilder app) => app.Use(async (http, next) =>
    {
        if (http.GetEndpoint()?.Metadata.GetMetadata<StartsRun>() is null || !http.RequestServices.GetRequiredService<Admission>().Draining)
        {
            await next(http);
            return;
        }
        http.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
        http.Response.Headers.RetryAfter = RetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        // The connection goes with the node: a client that keeps it would send its retry to a server that is stopping.
        http.Response.Headers.Connection = "close";
        var problem = Problems.Create(StatusCodes.Status503ServiceUnavailable, Problems.SandboxUnavailable, "This node is shutting down",
            $"This node has begun a graceful shutdown and takes no new runs; nothing was recorded or run. Send the request again after "
            + $"{RetryAfterSeconds} s, or now to another node of the service.");
        await http.RequestServices.GetRequiredService<IProblemDetailsService>().WriteAsync(new ProblemDetailsContext { HttpContext = http, ProblemDetails = problem });
    });
}
