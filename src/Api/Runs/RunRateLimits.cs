using System.Collections.Concurrent;
using System.Globalization;
using System.Threading.RateLimiting;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Api.Hosting;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Api.Runs;

public sealed class RateLimitOptions
{
    public const string Section = "RateLimit";

    /// <summary>Tokens added to each subject's bucket every period.</summary>
    public int TokensPerPeriod { get; set; } = 20;

    public int PeriodSeconds { get; set; } = 1;

    /// <summary>The bucket's size: how many runs a subject may start at once after being idle.</summary>
    public int BurstLimit { get; set; } = 40;
}

/// <summary>
/// Per-subject token bucket on POST /v1/runs. A refused request gets 429 with Retry-After and is recorded
/// (RequestRejected, 429) like every other refusal, so the audit record accounts for it; when the refusal cannot
/// be recorded the answer is 503 with Retry-After, never a 500. A refused request takes no token (the bucket
/// refuses without consuming), and a request the service itself refuses gets its token back (Refund).
/// </summary>
public static class RunRateLimits
{
    public const string Policy = "runs-per-subject";

    private const string BucketItem = "sandbox.rate-limit-bucket";

    /// <summary>
    /// Gives back the token this request took: the service refused it for its own reasons (audit store down, no
    /// capacity, no sandbox), so the caller's budget should not pay for it.
    /// </summary>
    public static void Refund(HttpContext http)
    {
        if (http.Items[BucketItem] is string key)
            http.RequestServices.GetRequiredService<SubjectBuckets>().Refund(key);
    }

    /// <summary>Retry-After when a refusal could not be recorded (the audit store is down).</summary>
    public const int UnrecordedRetryAfterSeconds = 5;

    /// <summary>
    /// A bucket per (tenant, subject), encoded so that no two pairs share a key: tenant "a/b" + subject "c" and tenant
    /// "a" + subject "b/c" joined with "/" were one bucket; a length prefix makes the split unambiguous.
    /// </summary>
    public static string BucketKey(Caller caller) =>
        caller.Tenant.Length.ToString(CultureInfo.InvariantCulture) + ":" + caller.Tenant + caller.Subject;

    public static IServiceCollection AddRunRateLimits(this IServiceCollection services, IConfiguration configuration)
    {
        var options = configuration.GetSection(RateLimitOptions.Section).Get<RateLimitOptions>() ?? new RateLimitOptions();
        if (options.TokensPerPeriod < 1 || options.PeriodSeconds < 1 || options.BurstLimit < 1)
            throw new InvalidOperationException("RateLimit:TokensPerPeriod, PeriodSeconds and BurstLimit must each be at least 1.");

        var buckets = new SubjectBuckets(options, TimeProvider.System);
        services.AddSingleton(buckets);
        return services.AddRateLimiter(limiter =>
        {
            limiter.AddPolicy(Policy, http =>
            {
                var key = http.User.ToCaller() is { Subject.Length: > 0 } caller ? BucketKey(caller) : "";
                http.Items[BucketItem] = key;
                return RateLimitPartition.Get(key, k => buckets.Create(k));
            });
            limiter.OnRejected = async (context, ct) =>
            {
                var http = context.HttpContext;
                var retryAfter = context.Lease.TryGetMetadata(MetadataName.RetryAfter, out var wait)
                    ? Math.Max(1, (int)Math.Ceiling(wait.TotalSeconds))
                    : options.PeriodSeconds;
                var detail = $"Rate limit: {options.TokensPerPeriod} runs per {options.PeriodSeconds} s (bursts up to {options.BurstLimit}) per subject. Retry after {retryAfter} s.";
                var orchestrator = http.RequestServices.GetRequiredService<RunOrchestrator>();
                Microsoft.AspNetCore.Mvc.ProblemDetails problem;
                try
                {
                    var runId = await orchestrator.RejectAsync(http.User.ToCaller(), RequestClient.Of(http), 429, [detail], null, null, ct);
                    http.Response.StatusCode = 429;
                    problem = Problems.Create(429, Problems.RateLimited, "Too many requests", detail, runId);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    // Nothing ran and nothing was recorded: the client may retry once the audit store is back.
                    http.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(RunRateLimits))
                        .LogWarning(e, "A rate-limit refusal could not be recorded");
                    http.Response.StatusCode = 503;
                    retryAfter = Math.Max(retryAfter, UnrecordedRetryAfterSeconds);
                    problem = Problems.Create(503, Problems.AuditUnavailable, "The audit store is unavailable",
                        $"Too many requests, and the refusal could not be recorded, so nothing was run. Retry after {retryAfter} s.");
                }
                http.Response.Headers.RetryAfter = retryAfter.ToString(CultureInfo.InvariantCulture);
                await http.RequestServices.GetRequiredService<IProblemDetailsService>().WriteAsync(new ProblemDetailsContext
                {
                    HttpContext = http,
                    ProblemDetails = problem,
                });
            };
        });
    }
}

/// <summary>The per-subject buckets (TokenBucket), each behind the rate-limiting middleware as a RateLimiter.</summary>
public sealed class SubjectBuckets(RateLimitOptions options, TimeProvider clock)
{
    public RateLimitOptions Options { get; } = options;

    public TimeProvider Clock { get; } = clock;

    private readonly ConcurrentDictionary<string, Bucket> _buckets = new(StringComparer.Ordinal);

    public RateLimiter Create(string key) => _buckets.AddOrUpdate(key, k => new Bucket(this), (_, existing) => existing);

    public void Refund(string key)
    {
        if (_buckets.TryGetValue(key, out var bucket))
            bucket.Refund();
    }

    private sealed class Bucket(SubjectBuckets owner) : RateLimiter
    {
        private readonly Lock _lock = new();
        private TokenBucket _state = TokenBucket.Full(owner.Options.BurstLimit, owner.Clock.GetUtcNow());

        private TimeSpan Period => TimeSpan.FromSeconds(owner.Options.PeriodSeconds);

        // Never idle: the middleware would drop the limiter and its refunds with it. Buckets are few (one per subject).
        public override TimeSpan? IdleDuration => null;

        public override RateLimiterStatistics GetStatistics()
        {
            lock (_lock)
                return new RateLimiterStatistics { CurrentAvailablePermits = (long)_state.Refilled(owner.Clock.GetUtcNow(), owner.Options.BurstLimit, owner.Options.TokensPerPeriod, Period).Tokens };
        }

        protected override RateLimitLease AttemptAcquireCore(int permitCount)
        {
            lock (_lock)
            {
                var (next, granted, retryAfter) = _state.Take(owner.Clock.GetUtcNow(), owner.Options.BurstLimit, owner.Options.TokensPerPeriod, Period);
                _state = next;
                return new Lease(granted, retryAfter);
            }
        }

        protected override ValueTask<RateLimitLease> AcquireAsyncCore(int permitCount, CancellationToken cancellationToken) =>
            ValueTask.FromResult(AttemptAcquireCore(permitCount));

        public void Refund()
        {
            lock (_lock)
                _state = _state.Refund(owner.Options.BurstLimit);
        }
    }

    private sealed class Lease(bool granted, TimeSpan retryAfter) : RateLimitLease
    {
        public override bool IsAcquired => granted;

        public override IEnumerable<string> MetadataNames => granted ? [] : [MetadataName.RetryAfter.Name];

        public override bool TryGetMetadata(string metadataName, out object? metadata)
        {
            metadata = !granted && metadataName == MetadataName.RetryAfter.Name ? retryAfter : null;
            return metadata is not null;
        }
    }
}
