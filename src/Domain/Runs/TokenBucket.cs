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
}
