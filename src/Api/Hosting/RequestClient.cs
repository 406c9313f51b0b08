using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Api.Hosting;

/// <summary>The one way a request's origin is recorded: server correlation id, client's traceparent apart, bounded sizes.</summary>
public static class RequestClient
{
    public const int MaxHeaderChars = 512;

    public static ClientInfo Of(HttpContext http) => new(
        http.Connection.RemoteIpAddress?.ToString(),
        Bounded(http.Request.Headers.UserAgent.ToString()),
        http.Request.Headers["Idempotency-Key"].ToString() is { Length: > 0 } key ? key : null,
        http.TraceIdentifier,
        Bounded(http.Request.Headers["traceparent"].ToString()));

    private static string? Bounded(string value) => value.Length == 0 ? null : value[..Math.Min(value.Length, MaxHeaderChars)];
}
