using System.Globalization;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Domain.Startup;

namespace Sandbox.Audited.Audit.Trail;

/// <summary>
/// How often each tenant is checkpointed without being asked: Audit:CheckpointInterval (a TimeSpan such as
/// "00:05:00"; "0" or absent turns the schedule off) and Audit:CheckpointIntervals:{tenant} to override it per tenant.
/// </summary>
public sealed record CheckpointScheduleOptions(TimeSpan? Interval, IReadOnlyDictionary<string, TimeSpan?> PerTenant)
{
    public static CheckpointScheduleOptions From(IConfiguration configuration)
    {
        var audit = configuration.GetSection("Audit");
        var perTenant = audit.GetSection("CheckpointIntervals").GetChildren()
            .ToDictionary(c => c.Key, c => Parse(c.Value, $"Audit:CheckpointIntervals:{c.Key}"), StringComparer.Ordinal);
        return new CheckpointScheduleOptions(Parse(audit["CheckpointInterval"], "Audit:CheckpointInterval"), perTenant);
    }

    public TimeSpan? For(string tenant) => PerTenant.TryGetValue(tenant, out var own) ? own : Interval;

    public bool Enabled => Interval is not null || PerTenant.Values.Any(v => v is not null);

    /// <summary>How often to look for changed tenants: the shortest interval, between one second and one minute.</summary>
    public TimeSpan Tick
    {
        get
        {
            var shortest = PerTenant.Values.Append(Interval).Where(v => v is not null).Select(v => v!.Value).DefaultIfEmpty(TimeSpan.FromMinutes(1)).Min();
            return TimeSpan.FromTicks(Math.Clamp(shortest.Ticks, TimeSpan.FromSeconds(1).Ticks, TimeSpan.FromMinutes(1).Ticks));
        }
    }

    private static TimeSpan? Parse(string? text, string name)
    {
        if (string.IsNullOrWhiteSpace(text) || text.Trim() == "0")
            return null;
        if (TimeSpan.TryParse(text, CultureInfo.InvariantCulture, out var value) && value > TimeSpan.Zero)
            return value;
        throw new InvalidSettingException($"{name} '{text}' must be a positive TimeSpan such as 00:05:00, or 0 for none.");
    }
}

/// <summary>
/// Takes checkpoints on a schedule: each tick it finds the tenants with events since the last tick (the first tick
/// reads the whole record once), and checkpoints each whose interval has passed since its last checkpoint, unless
/// nothing but its own checkpoints changed. Each checkpoint carries its consistency proof to the previous one.
/// </summary>
public sealed partial class CheckpointSchedule(
    NpgsqlDataSource database,
    AuditCheckpoints checkpoints,
    CheckpointScheduleOptions options,
    TimeProvider clock,
    ILogger<CheckpointSchedule> logger) : BackgroundService
{
    public const string Subject = "system:checkpoint-schedule";

    private readonly HashSet<string> _pending = new(StringComparer.Ordinal);
    private readonly Dictionary<string, DateTimeOffset> _last = new(StringComparer.Ordinal);
    private long _since;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (!options.Enabled)
            return;
        using var timer = new PeriodicTimer(options.Tick, clock);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                try
                {
                    await TickAsync(stoppingToken);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    LogFailed(e);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Stopped, also when the host gives up on a failed start without StopAsync: not a failure of the schedule.
        }
    }

    /// <summary>One pass: checkpoints every changed tenant that is due; returns how many were recorded.</summary>
    public async Task<int> TickAsync(CancellationToken ct)
    {
        await using (var command = database.CreateCommand($"""
            SELECT max(e.seq_id), array_agg(DISTINCT f.data -> 'caller' ->> 'tenant') FILTER (WHERE f.data -> 'caller' ->> 'tenant' IS NOT NULL)
            FROM sandbox.mt_events e {AuditQueries.StreamOwner}
            WHERE e.seq_id > $1
            """))
        {
            command.CommandTimeout = 0;
            command.Parameters.AddWithValue(_since);
            await using var reader = await command.ExecuteReaderAsync(ct);
            if (await reader.ReadAsync(ct) && !reader.IsDBNull(0))
            {
                _since = reader.GetInt64(0);
                if (!reader.IsDBNull(1))
                    _pending.UnionWith(reader.GetFieldValue<string[]>(1));
            }
        }

        var recorded = 0;
        var now = clock.GetUtcNow();
        foreach (var tenant in _pending.ToList())
        {
            if (options.For(tenant) is not { } interval)
            {
                _pending.Remove(tenant);
                continue;
            }
            if (!_last.TryGetValue(tenant, out var last))
                last = _last[tenant] = (await checkpoints.ListAsync(tenant, ct)).LastOrDefault()?.At ?? DateTimeOffset.MinValue;
            if (now - last < interval)
                continue;
            var checkpoint = await checkpoints.CreateIfChangedAsync(new Caller(Subject, tenant, []), ct);
            _last[tenant] = now;
            _pending.Remove(tenant);
            if (checkpoint is not null)
            {
                recorded++;
                LogRecorded(tenant, checkpoint.Head.TreeSize);
            }
        }
        return recorded;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Scheduled checkpoint of tenant {Tenant} at tree size {TreeSize}")]
    private partial void LogRecorded(string tenant, long treeSize);

    [LoggerMessage(Level = LogLevel.Error, Message = "A scheduled checkpoint pass failed; the next tick retries")]
    private partial void LogFailed(Exception error);
}
