using System.Globalization;
using System.Threading.RateLimiting;
using Sandbox.Audited.Api.Auth;
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
/// (RequestRejected, 429) like every other refusal, so the audit record accounts for it.
/// </summary>
public static class RunRateLimits
{
    public const string Policy = "runs-per-subject";

    public static IServiceCollection AddRunRateLimits(this IServiceCollection services, IConfiguration configuration)
    {
        var options = configuration.GetSection(RateLimitOptions.Section).Get<RateLimitOptions>() ?? new RateLimitOptions();
        if (options.TokensPerPeriod < 1 || options.PeriodSeconds < 1 || options.BurstLimit < 1)
            throw new InvalidOperationException("RateLimit:TokensPerPeriod, PeriodSeconds and BurstLimit must each be at least 1.");

        return services.AddRateLimiter(limiter =>
        {
            limiter.AddPolicy(Policy, http => RateLimitPartition.GetTokenBucketLimiter(
                http.User.ToCaller() is { Subject.Length: > 0 } caller ? caller.Tenant + "/" + caller.Subject : "",
                _ => new TokenBucketRateLimiterOptions
                {
                    TokenLimit = options.BurstLimit,
                    TokensPerPeriod = options.TokensPerPeriod,
                    ReplenishmentPeriod = TimeSpan.FromSeconds(options.PeriodSeconds),
                    QueueLimit = 0,
                    AutoReplenishment = true,
                }));
            limiter.OnRejected = async (context, ct) =>
            {
                var http = context.HttpContext;
                var retryAfter = context.Lease.TryGetMetadata(MetadataName.RetryAfter, out var wait)
                    ? Math.Max(1, (int)Math.Ceiling(wait.TotalSeconds))
                    : options.PeriodSeconds;
                var detail = $"Rate limit: {options.TokensPerPeriod} runs per {options.PeriodSeconds} s (bursts up to {options.BurstLimit}) per subject. Retry after {retryAfter} s.";
                var orchestrator = http.RequestServices.GetRequiredService<RunOrchestrator>();
                var caller = http.User.ToCaller();
                var client = new ClientInfo(http.Connection.RemoteIpAddress?.ToString(), null,
                    http.Request.Headers["Idempotency-Key"].ToString() is { Length: > 0 } key ? key : null, http.TraceIdentifier);
                var runId = await orchestrator.RejectAsync(caller, client, 429, [detail], null, null, ct);

                http.Response.StatusCode = 429;
                http.Response.Headers.RetryAfter = retryAfter.ToString(CultureInfo.InvariantCulture);
                await http.RequestServices.GetRequiredService<IProblemDetailsService>().WriteAsync(new ProblemDetailsContext
                {
                    HttpContext = http,
                    ProblemDetails = Problems.Create(429, Problems.RateLimited, "Too many requests", detail, runId),
                });
            };
        });
    }
}
