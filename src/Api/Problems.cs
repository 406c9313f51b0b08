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
    public const string MethodNotAllowed = "/problems/method-not-allowed";
    public const string UnsupportedMediaType = "/problems/unsupported-media-type";

    /// <summary>
    /// Answers the framework writes by itself (a path no route matches, an id that is not a UUID, a method a route does not
    /// take) get the stable types the OpenAPI document declares instead of links to RFC 9110, and a detail saying what to do.
    /// </summary>
    public static void Normalize(ProblemDetailsContext context)
    {
        var problem = context.ProblemDetails;
        if (problem.Type is { } type && !type.StartsWith("https://tools.ietf.org/", StringComparison.Ordinal))
            return;
        (problem.Type, problem.Detail) = problem.Status switch
        {
            400 => (InvalidRequest, problem.Detail ?? "The request could not be read; the API description (/openapi/v1.json) gives each operation's parameters and body."),
            404 => (NotFound, problem.Detail ?? "Nothing is served at this path; the API description (/openapi/v1.json) lists the paths (run ids are UUIDs)."),
            405 => (MethodNotAllowed, problem.Detail ?? "This path does not take this method; the Allow header and the API description (/openapi/v1.json) say which it takes."),
            415 => (UnsupportedMediaType, problem.Detail ?? "Send the body as JSON (Content-Type: application/json)."),
            _ => (problem.Type, problem.Detail),
        };
    }

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
public sealed partial class ProblemExceptionHandler(IProblemDetailsService problems, ILogger<ProblemExceptionHandler> logger) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext http, Exception exception, CancellationToken ct)
    {
        var problem = exception switch
        {
            WriteAheadException => Problems.Create(503, Problems.AuditUnavailable, "The audit store is unavailable",
                "The run could not be recorded, so nothing was run. Retry shortly."),
            CapacityException e => Problems.Create(429, Problems.CapacityExceeded, "No capacity to run now",
                $"The run was recorded but not admitted: {e.Refusal.Reason}. Retry after {e.Refusal.RetryAfterSeconds} s.", e.RunId),
            // The engine's own text (its socket, image names, container ids) is logged by the orchestrator, not sent.
            SandboxUnavailableException e => Problems.Create(503, Problems.SandboxUnavailable, "No sandbox is available",
                "The run was recorded but no sandbox could be created: the container engine is unavailable or could not start one. Retry shortly.", e.RunId),
            SpoolUnavailableException => Problems.Create(503, Problems.SandboxUnavailable, "No room for input files",
                "This node cannot take input files now; nothing was recorded or run. Retry shortly."),
            _ when IsStoreUnavailable(exception) => Problems.Create(503, Problems.AuditUnavailable, "The audit store is unavailable",
                "PostgreSQL does not answer right now. Retry shortly."),
            BadHttpRequestException e when e.StatusCode == 415 => Problems.Create(415, Problems.UnsupportedMediaType, "Unsupported media type",
                e.Message + " Send the body as application/json."),
            BadHttpRequestException e when e.StatusCode == 413 => Problems.Create(413, Problems.PayloadTooLarge, "Request body too large", e.Message),
            BadHttpRequestException { InnerException: System.Text.Json.JsonException json } => Problems.Create(400, Problems.InvalidRequest, "Invalid request",
                $"The JSON body could not be read{(json.Path is { } path ? $" at {path}" : "")}: it is malformed, or holds an unknown member or a value of the wrong type. The operation's body schema is in /openapi/v1.json."),
            BadHttpRequestException when SentNoBody(http.Request) => Problems.Create(400, Problems.InvalidRequest, "Invalid request",
                "This operation needs a JSON body (Content-Type: application/json); the request had none."),
            BadHttpRequestException e => Problems.Create(400, Problems.InvalidRequest, "Invalid request", e.Message),
            _ => null,
        };
        if (problem is null)
            return false;
        if (exception is SpoolUnavailableException)
            LogSpoolUnavailable(exception.InnerException!);
        http.Response.StatusCode = problem.Status!.Value;
        if (exception is CapacityException capacity)
            http.Response.Headers.RetryAfter = capacity.Refusal.RetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        else if (problem.Status == 503)
            http.Response.Headers.RetryAfter = "5";
        return await problems.TryWriteAsync(new ProblemDetailsContext { HttpContext = http, ProblemDetails = problem, Exception = exception });
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "An upload's input files could not be spooled (Executor:SpoolDirectory)")]
    private partial void LogSpoolUnavailable(Exception e);

    private static bool SentNoBody(HttpRequest request) =>
        (HttpMethods.IsPost(request.Method) || HttpMethods.IsPut(request.Method) || HttpMethods.IsPatch(request.Method))
        && request.ContentLength is null or 0 && !request.Headers.ContainsKey("Transfer-Encoding");

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
