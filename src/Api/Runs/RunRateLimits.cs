using System.Diagnostics;
using System.Globalization;
using System.Threading.RateLimiting;
using Npgsql;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Api.Hosting;
using Sandbox.Audited.Audit;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Domain.Startup;

namespace Sandbox.Audited.Api.Runs;

public sealed class RateLimitOptions
{
    public const string Section = "RateLimit";

    /// <summary>Tokens added to each subject's bucket every period.</summary>
    public int TokensPerPeriod { get; set; } = 20;

    public int PeriodSeconds { get; set; } = 1;

    /// <summary>The bucket's size: how many runs a subject may start at once after being idle.</summary>
    public int BurstLimit { get; set; } = 40;

    /// <summary>
    /// How long a request waits for the shared bucket before it is answered 503. PostgreSQL away fails at once (connection
    /// refused); this bounds a hung one. Takes of one subject queue on its row: a burst of 100 on a loaded 2-core machine
    /// needed more than 2 s.
    /// </summary>
    public int TimeoutMs { get; set; } = 10000;

    /// <summary>
    /// Connections this node keeps for the buckets. A burst of requests queues for them instead of opening one connection
    /// each (100 at once spent their whole TimeoutMs in authentication on a busy machine).
    /// </summary>
    public int MaxConnections { get; set; } = 8;
}

/// <summary>
/// Per-subject token bucket on POST /v1/runs, shared by every api node: the bucket is a row in PostgreSQL
/// (sandbox.rate_limit_buckets) taken with one atomic statement per request, behind ASP.NET Core's rate-limiting
/// middleware as a RateLimiter. A refused request gets 429 with Retry-After and is recorded (RequestRejected, 429) like
/// every other refusal; when the refusal cannot be recorded the answer is 503 with Retry-After, never a 500. A refused
/// request takes no token, and a request the service itself refuses gets its token back (RefundAsync). When the bucket
/// cannot be read (PostgreSQL away or slower than RateLimit:TimeoutMs) the request is refused with 503 and Retry-After:
/// nothing could be recorded or run anyway, and no node may hand out a budget the others cannot see.
/// </summary>
public static class RunRateLimits
{
    public const string Policy = "runs-per-subject";

    private const string BucketItem = "sandbox.rate-limit-bucket";

    /// <summary>Set on a refusal's lease when the shared bucket could not be read.</summary>
    public static readonly MetadataName<bool> StoreUnavailable = MetadataName.Create<bool>("sandbox.rate-limit-store-unavailable");

    /// <summary>
    /// Gives back the token this request took: the service refused it for its own reasons (audit store down, no
    /// capacity, no sandbox), so the caller's budget should not pay for it. Best effort: with PostgreSQL away it is lost.
    /// </summary>
    public static async Task RefundAsync(HttpContext http)
    {
        if (http.Items[BucketItem] is string key)
        {
            http.Items.Remove(BucketItem); // at most one token back per request
            await http.RequestServices.GetRequiredService<SubjectBuckets>().RefundAsync(key);
        }
    }

    /// <summary>
    /// On an endpoint behind the limiter (so only once its token was taken): when the answer turns out to be the service's
    /// own failure (TokenBucket.GivenBack: any 5xx, whichever step threw or answered it), the token goes back once the
    /// response has completed. One place for every exit, instead of a refund at each one.
    /// </summary>
    public static TBuilder RefundedOnServiceFailure<TBuilder>(this TBuilder endpoint) where TBuilder : IEndpointConventionBuilder =>
        endpoint.AddEndpointFilter(async (context, next) =>
        {
            var http = context.HttpContext;
            http.Response.OnCompleted(() => TokenBucket.GivenBack(http.Response.StatusCode) ? RefundAsync(http) : Task.CompletedTask);
            return await next(context);
        });

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
        if (options.TokensPerPeriod < 1 || options.PeriodSeconds < 1 || options.BurstLimit < 1 || options.TimeoutMs < 1 || options.MaxConnections < 1)
            throw new InvalidSettingException("RateLimit:TokensPerPeriod, PeriodSeconds, BurstLimit, TimeoutMs and MaxConnections must each be at least 1.");
        var connection = new NpgsqlConnectionStringBuilder(configuration.GetConnectionString("Sandbox"))
        {
            MaxPoolSize = options.MaxConnections,
            ApplicationName = "sandbox-audited rate limit",
        };

        services.AddSingleton(provider => new SubjectBuckets(NpgsqlDataSource.Create(connection), options, provider.GetRequiredService<ILogger<SubjectBuckets>>()));
        return services.AddRateLimiter(limiter =>
        {
            limiter.AddPolicy(Policy, http =>
            {
                var key = http.User.ToCaller() is { Subject.Length: > 0 } caller ? BucketKey(caller) : "";
                http.Items[BucketItem] = key;
                var buckets = http.RequestServices.GetRequiredService<SubjectBuckets>();
                return RateLimitPartition.Get(key, buckets.Create);
            });
            limiter.OnRejected = async (context, ct) =>
            {
                var http = context.HttpContext;
                var retryAfter = context.Lease.TryGetMetadata(MetadataName.RetryAfter, out var wait)
                    ? Math.Max(1, (int)Math.Ceiling(wait.TotalSeconds))
                    : options.PeriodSeconds;
                Microsoft.AspNetCore.Mvc.ProblemDetails problem;
                if (context.Lease.TryGetMetadata(StoreUnavailable, out var unavailable) && unavailable)
                {
                    http.Response.StatusCode = 503;
                    problem = Problems.Create(503, Problems.AuditUnavailable, "The audit store is unavailable",
                        $"The rate limit shared by all nodes could not be checked (the database is unavailable), so nothing was run or recorded. Retry after {retryAfter} s.");
                }
                else
                    problem = await RefuseAsync(http, options, retryAfter, ct);
                http.Response.Headers.RetryAfter = http.Response.StatusCode == 503
                    ? Math.Max(retryAfter, UnrecordedRetryAfterSeconds).ToString(CultureInfo.InvariantCulture)
                    : retryAfter.ToString(CultureInfo.InvariantCulture);
                await http.RequestServices.GetRequiredService<IProblemDetailsService>().WriteAsync(new ProblemDetailsContext
                {
                    HttpContext = http,
                    ProblemDetails = problem,
                });
            };
        });
    }

    /// <summary>Records the 429 (RequestRejected); when that fails the answer is 503, nothing ran and nothing was recorded.</summary>
    private static async Task<Microsoft.AspNetCore.Mvc.ProblemDetails> RefuseAsync(HttpContext http, RateLimitOptions options, int retryAfter, CancellationToken ct)
    {
        var detail = $"Rate limit: {options.TokensPerPeriod} runs per {options.PeriodSeconds} s (bursts up to {options.BurstLimit}) per subject. Retry after {retryAfter} s.";
        var orchestrator = http.RequestServices.GetRequiredService<RunOrchestrator>();
        try
        {
            var runId = await orchestrator.RejectAsync(http.User.ToCaller(), RequestClient.Of(http), 429, [detail], null, null, ct);
            http.Response.StatusCode = 429;
            return Problems.Create(429, Problems.RateLimited, "Too many requests", detail, runId);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            http.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(RunRateLimits))
                .LogWarning(e, "A rate-limit refusal could not be recorded");
            http.Response.StatusCode = 503;
            return Problems.Create(503, Problems.AuditUnavailable, "The audit store is unavailable",
                $"Too many requests, and the refusal could not be recorded, so nothing was run. Retry after {Math.Max(retryAfter, UnrecordedRetryAfterSeconds)} s.");
        }
    }
}

/// <summary>
/// The shared buckets: one row per subject in sandbox.rate_limit_buckets, refilled by elapsed time and taken in one
/// INSERT ... ON CONFLICT DO UPDATE ... RETURNING, so concurrent requests on any number of nodes serialise on the row.
/// </summary>
public sealed partial class SubjectBuckets(NpgsqlDataSource db, RateLimitOptions options, ILogger<SubjectBuckets> logger) : IAsyncDisposable
{
    // The buckets' own connections close with the host.
    public ValueTask DisposeAsync() => db.DisposeAsync();

    private static readonly string Table = $"{MartenSetup.Schema}.rate_limit_buckets";

    // The bucket's level now: its stored tokens plus what refilled since (never negative time: a later writer may have
    // started its transaction first), at most the burst. $2 = burst, $3 = tokens per second.
    private static readonly string Level = "least($2::float8, b.tokens + greatest(0, extract(epoch FROM now() - b.refilled_at)::float8) * $3::float8)";

    private static readonly string TakeSql = $"""
        INSERT INTO {Table} AS b (bucket, tokens, refilled_at, granted) VALUES ($1, $2::float8 - 1, now(), true)
        ON CONFLICT (bucket) DO UPDATE SET
            granted = {Level} >= 1,
            tokens = {Level} - CASE WHEN {Level} >= 1 THEN 1 ELSE 0 END,
            refilled_at = greatest(b.refilled_at, now())
        RETURNING granted, tokens
        """;

    // A bucket is a budget, not a record: its commits do not wait for the disk (one flush less on every run's path). Set for
    // the statement's own transaction (a batch is one), so that it holds behind a transaction-mode pooler and never leaks to
    // another use of the connection. A PostgreSQL crash may forget the takes of its last moments (up to three
    // wal_writer_delay, 600 ms by default), so a subject may get a few runs more; never a recorded event, which commits on the
    // service's other connections.
    private static NpgsqlBatchCommand NoFlush() => new("SELECT set_config('synchronous_commit', 'off', true)");

    public RateLimitOptions Options => options;

    private TimeSpan Period => TimeSpan.FromSeconds(options.PeriodSeconds);

    public RateLimiter Create(string key) => new SharedBucket(this, key);

    /// <summary>Takes a token if the subject has one; a refusal takes nothing. Throws when PostgreSQL does not answer in time.</summary>
    public async Task<(bool Granted, TimeSpan RetryAfter)> TakeAsync(string key, CancellationToken ct)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(options.TimeoutMs);
        await using var batch = db.CreateBatch();
        batch.BatchCommands.Add(NoFlush());
        var take = new NpgsqlBatchCommand(TakeSql);
        take.Parameters.AddWithValue(key);
        take.Parameters.AddWithValue(options.BurstLimit);
        take.Parameters.AddWithValue(options.TokensPerPeriod / Period.TotalSeconds);
        batch.BatchCommands.Add(take);
        await using var reader = await batch.ExecuteReaderAsync(timeout.Token);
        await reader.NextResultAsync(timeout.Token);
        await reader.ReadAsync(timeout.Token);
        var granted = reader.GetBoolean(0);
        return (granted, granted ? TimeSpan.Zero : TokenBucket.RetryAfter(reader.GetDouble(1), options.TokensPerPeriod, Period));
    }

    public async Task RefundAsync(string key)
    {
        try
        {
            using var timeout = new CancellationTokenSource(options.TimeoutMs);
            await using var batch = db.CreateBatch();
            batch.BatchCommands.Add(NoFlush());
            var refund = new NpgsqlBatchCommand($"UPDATE {Table} SET tokens = least($2::float8, tokens + 1) WHERE bucket = $1");
            refund.Parameters.AddWithValue(key);
            refund.Parameters.AddWithValue(options.BurstLimit);
            batch.BatchCommands.Add(refund);
            await batch.ExecuteNonQueryAsync(timeout.Token);
        }
        catch (Exception e)
        {
            LogRefundLost(e);
        }
    }

    /// <summary>The middleware's RateLimiter for one subject: no state of its own, every decision is the shared row's.</summary>
    private sealed class SharedBucket(SubjectBuckets owner, string key) : RateLimiter
    {
        private long _lastUsed = Stopwatch.GetTimestamp();

        // Idle since its last request, so the middleware can drop it: nothing is lost, the bucket is in PostgreSQL.
        public override TimeSpan? IdleDuration => Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastUsed));

        public override RateLimiterStatistics? GetStatistics() => null;

        // The middleware asks synchronously first; the answer needs PostgreSQL, so it says "not yet" and asks again async.
        protected override RateLimitLease AttemptAcquireCore(int permitCount) => Lease.Undecided;

        protected override async ValueTask<RateLimitLease> AcquireAsyncCore(int permitCount, CancellationToken cancellationToken)
        {
            Interlocked.Exchange(ref _lastUsed, Stopwatch.GetTimestamp());
            try
            {
                var (granted, retryAfter) = await owner.TakeAsync(key, cancellationToken);
                return new Lease(granted, retryAfter, StoreUnavailable: false);
            }
            catch (Exception e) when (!cancellationToken.IsCancellationRequested)
            {
                owner.StoreUnavailable(e);
                return new Lease(false, TimeSpan.FromSeconds(RunRateLimits.UnrecordedRetryAfterSeconds), StoreUnavailable: true);
            }
        }
    }

    private sealed class Lease(bool granted, TimeSpan retryAfter, bool StoreUnavailable) : RateLimitLease
    {
        public static readonly Lease Undecided = new(false, TimeSpan.Zero, false);

        public override bool IsAcquired => granted;

        public override IEnumerable<string> MetadataNames => granted ? [] : [MetadataName.RetryAfter.Name, RunRateLimits.StoreUnavailable.Name];

        public override bool TryGetMetadata(string metadataName, out object? metadata)
        {
            metadata = granted ? null
                : metadataName == MetadataName.RetryAfter.Name ? retryAfter
                : metadataName == RunRateLimits.StoreUnavailable.Name ? StoreUnavailable
                : null;
            return metadata is not null;
        }
    }

    private long _lastUnavailableLog;

    // One warning every 10 s while PostgreSQL is away, not one per refused request.
    private void StoreUnavailable(Exception e)
    {
        var last = Interlocked.Read(ref _lastUnavailableLog);
        if (Stopwatch.GetElapsedTime(last) > TimeSpan.FromSeconds(10) && Interlocked.CompareExchange(ref _lastUnavailableLog, Stopwatch.GetTimestamp(), last) == last)
            LogStoreUnavailable(e);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "The shared rate limit could not be checked; requests are refused with 503 until it can")]
    private partial void LogStoreUnavailable(Exception e);

    [LoggerMessage(Level = LogLevel.Warning, Message = "A rate-limit token could not be given back")]
    private partial void LogRefundLost(Exception e);
}
