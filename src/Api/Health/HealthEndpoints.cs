using Npgsql;
using Sandbox.Audited.Api.Runs;
using Sandbox.Audited.Executor.Docker;

namespace Sandbox.Audited.Api.Health;

public static partial class HealthEndpoints
{
    // Probes answer HEAD too (load balancers and some orchestrators send it); the server drops the body.
    private static readonly string[] Probe = [HttpMethods.Get, HttpMethods.Head];

    public static void MapHealth(this IEndpointRouteBuilder app)
    {
        // Liveness: the process answers.
        app.MapMethods("/healthz", Probe, () => TypedResults.Ok(new { status = "ok" })).AllowAnonymous().ExcludeFromDescription();

        // Readiness: PostgreSQL and (on an executor) the Docker engine answer and the node is not draining; otherwise 503 with what is wrong.
        app.MapMethods("/readyz", Probe, async (NpgsqlDataSource db, DockerEngine docker, Admission admission, OutcomeJournal journal,
            IHostApplicationLifetime lifetime, Microsoft.Extensions.Options.IOptions<Sandbox.Audited.Audit.Queue.NodeOptions> node, ILoggerFactory loggers,
            CancellationToken ct) =>
        {
            // Draining starts at SIGTERM: not ready at once, before admission closes, so that no new run is sent here.
            if (admission.Draining || lifetime.ApplicationStopping.IsCancellationRequested)
                return Results.Json(new { status = "draining", checks = new Dictionary<string, string> { ["lifecycle"] = "draining" } },
                    statusCode: 503);
            var logger = loggers.CreateLogger(typeof(HealthEndpoints));
            var checks = new Dictionary<string, string>
            {
                ["postgres"] = await Check(logger, "postgres", async c =>
                {
                    await using var command = db.CreateCommand("SELECT 1");
                    await command.ExecuteScalarAsync(c);
                }, ct),
            };
            if (node.Value.Executor) // an api-only node has no engine
                checks["docker"] = await Check(logger, "docker", docker.PingAsync, ct);
            var ready = checks.Values.All(v => v == "ok");
            // Outcomes waiting in the journal do not make the node unready (it runs code), but an operator should see them.
            checks["journal"] = journal.Pending == 0 ? "empty" : $"{journal.Pending} outcomes waiting for the audit store";
            return Results.Json(new { status = ready ? "ready" : "not ready", checks }, statusCode: ready ? 200 : 503);
        }).AllowAnonymous().ExcludeFromDescription();
    }

    // The probe is anonymous: it says what is down, the log says why (the error names hosts, sockets and paths).
    private static async Task<string> Check(ILogger logger, string dependency, Func<CancellationToken, Task> probe, CancellationToken ct)
    {
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(TimeSpan.FromSeconds(3));
            await probe(timeout.Token);
            return "ok";
        }
        catch (Exception e)
        {
            LogUnavailable(logger, e, dependency);
            return "unavailable";
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Readiness: {Dependency} is unavailable")]
    private static partial void LogUnavailable(ILogger logger, Exception e, string dependency);
}
