using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Mvc;
using Sandbox.Audited.Api.Runs;

namespace Sandbox.Audited.Api;

/// <summary>Stable problem types (RFC 9457), one per kind of error a client can act on.</summary>
public static class Problems
{
    public const string InvalidRequest = "/problems/invalid-request";
    public const string PayloadTooLarge = "/problems/payload-too-large";
    public const string Unauthorized = "/problems/unauthorized";
    public const string Forbidden = "/problems/forbidden";
    public const string PolicyDenied = "/problems/policy-denied";
    public const string NotFound = "/problems/not-found";
    public const string CapacityExceeded = "/problems/capacity-exceeded";
    public const string RateLimited = "/problems/rate-limited";
    public const string AuditUnavailable = "/problems/audit-unavailable";
    public const string SandboxUnavailable = "/problems/sandbox-unavailable";
    public const string IdempotencyConflict = "/problems/idempotency-conflict";
    public const string Internal = "/problems/internal";

    public static ProblemDetails Create(int status, string type, string title, string detail, Guid? runId = null, IReadOnlyList<string>? errors = null)
    {
        var problem = new ProblemDetails { Status = status, Type = type, Title = title, Detail = detail };
        if (runId is { } id)
            problem.Extensions["runId"] = id;
        if (errors is { Count: > 0 })
            problem.Extensions["errors"] = errors;
        return problem;
    }
}

/// <summary>Turns failures the client can act on into problem details; a rule violation is never a 500.</summary>
public sealed class ProblemExceptionHandler(IProblemDetailsService problems) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext http, Exception exception, CancellationToken ct)
    {
        var problem = exception switch
        {
            WriteAheadException => Problems.Create(503, Problems.AuditUnavailable, "The audit store is unavailable",
                "The run could not be recorded, so nothing was run. Retry shortly."),
            CapacityException { Refusal.ShuttingDown: true } e => Problems.Create(503, Problems.SandboxUnavailable, "The service is shutting down",
                $"The run was recorded but not admitted: {e.Refusal.Reason}. Retry after {e.Refusal.RetryAfterSeconds} s.", e.RunId),
            CapacityException e => Problems.Create(429, Problems.CapacityExceeded, "No capacity to run now",
                $"The run was recorded but not admitted: {e.Refusal.Reason}. Retry after {e.Refusal.RetryAfterSeconds} s.", e.RunId),
            SandboxUnavailableException e => Problems.Create(503, Problems.SandboxUnavailable, "No sandbox is available",
                $"The run was recorded but no sandbox could be created ({e.Message}). Retry shortly.", e.RunId),
            _ when IsStoreUnavailable(exception) => Problems.Create(503, Problems.AuditUnavailable, "The audit store is unavailable",
                "PostgreSQL does not answer right now. Retry shortly."),
            BadHttpRequestException e when e.StatusCode == 413 => Problems.Create(413, Problems.PayloadTooLarge, "Request body too large", e.Message),
            BadHttpRequestException e => Problems.Create(400, Problems.InvalidRequest, "Invalid request", e.Message),
            _ => null,
        };
        if (problem is null)
            return false;
        http.Response.StatusCode = problem.Status!.Value;
        if (exception is CapacityException capacity)
            http.Response.Headers.RetryAfter = capacity.Refusal.RetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        else if (problem.Status == 503)
            http.Response.Headers.RetryAfter = "5";
        return await problems.TryWriteAsync(new ProblemDetailsContext { HttpContext = http, ProblemDetails = problem, Exception = exception });
    }

    // The database away (connection refused, reset, shut down) is a 503 the client can retry, not a 500.
    internal static bool IsStoreUnavailable(Exception? e)
    {
        for (; e is not null; e = e.InnerException)
            if (e is Npgsql.NpgsqlException { IsTransient: true } or Npgsql.PostgresException { SqlState: "57P01" or "57P02" or "57P03" }
                or System.Net.Sockets.SocketException)
                return true;
        return false;
    }
}
