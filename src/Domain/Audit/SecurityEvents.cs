using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Domain.Audit;

/// <summary>
/// A development token was minted (POST /v1/dev/token). Caller is the identity the token carries; RequestedBy says
/// who asked (the development sign-in is anonymous), from which address and Host, and when the token expires.
/// </summary>
public sealed record TokenMinted(
    Guid LogId,
    Caller Caller,
    DateTimeOffset ExpiresAt,
    string RequestedBy,
    string? ClientAddress,
    string? Host,
    string? UserAgent,
    string? CorrelationId,
    DateTimeOffset At);

/// <summary>
/// Requests refused by authentication (401) or authorization (403), counted per (status, reason, client address,
/// route, window): a flood of bad tokens costs one event per key and window, not one per request. Caller is the
/// token's identity for a 403; for a 401 nobody is known and the service tenant owns the record.
/// </summary>
public sealed record AccessRefused(
    Guid LogId,
    Caller Caller,
    int Status,
    string Reason,
    string? ClientAddress,
    string Route,
    DateTimeOffset WindowStart,
    int WindowSeconds,
    long Count,
    DateTimeOffset At);

public static class SecurityLogStreams
{
    /// <summary>One security stream per tenant and UTC day, like the access log: every node appends to the same stream.</summary>
    public static Guid For(string tenant, DateOnly day) =>
        NamedStreams.IdOf("sandbox-audited:security-log:" + tenant + ":" + day.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture));
}
