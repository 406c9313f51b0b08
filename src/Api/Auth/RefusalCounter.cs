using System.Collections.Concurrent;
using Microsoft.Extensions.Options;
using Sandbox.Audited.Audit.Trail;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Api.Auth;

/// <summary>
/// Counts refused authentication (401) and authorization (403) per (owner, status, reason, client address, route,
/// window) in memory and records each key once per window with its count, so that a flood of bad tokens costs a
/// bounded number of appends: at most <see cref="MaxKeys"/> per window (further addresses are counted as "other").
/// </summary>
public sealed partial class RefusalCounter(SecurityLog log, IOptions<AuthOptions> options, TimeProvider clock, ILogger<RefusalCounter> logger)
    : BackgroundService
{
    public const int MaxKeys = 1000;
    private const int MaxRouteChars = 200;

    private readonly record struct Key(string Tenant, string Subject, int Status, string Reason, string? Address, string Route, long Window);

    private ConcurrentDictionary<Key, long> _counts = new();

    private int WindowSeconds => Math.Max(1, options.Value.RefusalWindowSeconds);

    public void Count(HttpContext http, int status, string reason)
    {
        var caller = http.User.ToCaller();
        var owner = status == 403 && caller.Tenant.Length > 0 ? caller : new Caller("anonymous", options.Value.ServiceTenant, []);
        // The route template, not the raw path: ids and junk paths do not multiply the keys.
        var route = (http.GetEndpoint() as RouteEndpoint)?.RoutePattern.RawText ?? http.Request.Path.Value ?? "";
        var window = clock.GetUtcNow().ToUnixTimeSeconds() / WindowSeconds;
        var counts = _counts;
        var key = new Key(owner.Tenant, owner.Subject, status, reason, http.Connection.RemoteIpAddress?.ToString(), route[..Math.Min(route.Length, MaxRouteChars)], window);
        if (counts.Count >= MaxKeys && !counts.ContainsKey(key))
            key = key with { Address = "other", Route = "other" };
        counts.AddOrUpdate(key, 1, (_, n) => n + 1);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(WindowSeconds), clock);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
                await FlushAsync(all: false, stoppingToken);
        }
        catch (OperationCanceledException)
        {
        }
        await FlushAsync(all: true, CancellationToken.None);
    }

    /// <summary>Records every finished window (or all, at shutdown); a key that cannot be recorded now is kept for the next flush.</summary>
    public async Task FlushAsync(bool all, CancellationToken ct)
    {
        var current = clock.GetUtcNow().ToUnixTimeSeconds() / WindowSeconds;
        var counts = Interlocked.Exchange(ref _counts, new ConcurrentDictionary<Key, long>());
        await Task.Delay(10, CancellationToken.None); // lets a Count that read the old dictionary finish its increment
        foreach (var (key, count) in counts.OrderBy(k => k.Key.Window))
        {
            if (!all && key.Window >= current)
            {
                _counts.AddOrUpdate(key, count, (_, n) => n + count);
                continue;
            }
            try
            {
                await log.RecordRefusalsAsync(new Caller(key.Subject, key.Tenant, []), key.Status, key.Reason, key.Address, key.Route,
                    DateTimeOffset.FromUnixTimeSeconds(key.Window * WindowSeconds), WindowSeconds, count, ct);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                LogNotRecorded(e, count, key.Reason);
                _counts.AddOrUpdate(key, count, (_, n) => n + count);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Count} refused request(s) ({Reason}) could not be recorded yet; kept for the next flush")]
    private partial void LogNotRecorded(Exception e, long count, string reason);
}
