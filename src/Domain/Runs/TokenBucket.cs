namespace Sandbox.Audited.Domain.Runs;

/// <summary>
/// The token bucket's arithmetic that is not in its one SQL statement (the bucket itself lives in PostgreSQL so that every
/// api node shares it): how long a refused caller waits until a whole token has refilled.
/// </summary>
public static class TokenBucket
{
    /// <summary>Time until the bucket holds one token again, refilling tokensPerPeriod every period; at least one second.</summary>
    public static TimeSpan RetryAfter(double tokens, int tokensPerPeriod, TimeSpan period)
    {
        var missing = Math.Max(0, 1 - tokens);
        return TimeSpan.FromSeconds(Math.Max(1, Math.Ceiling(missing / tokensPerPeriod * period.TotalSeconds)));
    }

    /// <summary>
    /// Whether a request that took a token gets it back, from the status it was answered with: a 5xx is the service's own
    /// failure (audit store down, no sandbox, input spool full, a defect), so the caller's budget does not pay for it.
    /// A 429 for capacity keeps it: refunding a full queue or a tenant at its ceiling would let a subject that keeps its
    /// tenant busy send requests without bound, each one recorded and stored. A 4xx is the caller's.
    /// </summary>
    public static bool GivenBack(int status) => status is >= 500 and <= 599;
}
