namespace Sandbox.Audited.Domain.Runs;

/// <summary>
/// A token bucket as a value: Take and Refund return the next state. Refund exists so that a request the service
/// itself refused (audit store down, no capacity) gives back the token it took: the caller did nothing wrong.
/// </summary>
public readonly record struct TokenBucket(double Tokens, DateTimeOffset At)
{
    public static TokenBucket Full(int capacity, DateTimeOffset now) => new(capacity, now);

    /// <summary>The bucket refilled up to now: tokensPerPeriod every period, at most capacity.</summary>
    public TokenBucket Refilled(DateTimeOffset now, int capacity, int tokensPerPeriod, TimeSpan period) =>
        now <= At ? this : new(Math.Min(capacity, Tokens + (now - At).Ticks / (double)period.Ticks * tokensPerPeriod), now);

    /// <summary>Takes one token if there is one; otherwise says how long until there is.</summary>
    public (TokenBucket Next, bool Granted, TimeSpan RetryAfter) Take(DateTimeOffset now, int capacity, int tokensPerPeriod, TimeSpan period)
    {
        var current = Refilled(now, capacity, tokensPerPeriod, period);
        if (current.Tokens >= 1)
            return (current with { Tokens = current.Tokens - 1 }, true, TimeSpan.Zero);
        var missing = 1 - current.Tokens;
        return (current, false, TimeSpan.FromTicks((long)Math.Ceiling(missing / tokensPerPeriod * period.Ticks)));
    }

    public TokenBucket Refund(int capacity) => this with { Tokens = Math.Min(capacity, Tokens + 1) };
}
