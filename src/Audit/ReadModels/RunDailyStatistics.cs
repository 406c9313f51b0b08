using JasperFx.Events;
using Marten;
using Marten.Events.Projections;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Audit.ReadModels;

/// <summary>
/// Runs of one subject in one tenant on one UTC day (the day the run was requested): how many, and how they
/// ended by status and language, with their total duration. Id = "tenant/subject/yyyy-MM-dd".
/// </summary>
public sealed record RunDailyStatistics(
    string Id,
    string Tenant,
    string Subject,
    DateOnly Day,
    int Runs,
    int Completed,
    IReadOnlyDictionary<string, int> ByStatus,
    IReadOnlyDictionary<string, int> ByLanguage,
    long TotalDurationMs)
{
    public static string IdOf(string tenant, string subject, DateTimeOffset requestedAt) =>
        $"{tenant}/{subject}/{requestedAt.UtcDateTime:yyyy-MM-dd}";

    /// <summary>A run is counted when it is requested (or rejected) and its outcome when it ends.</summary>
    public static RunDailyStatistics Count(RunDailyStatistics s, object @event) => @event switch
    {
        RunRequested e => s with { Runs = s.Runs + 1, ByLanguage = Increment(s.ByLanguage, e.Language) },
        RequestRejected e => s with { Runs = s.Runs + 1, ByLanguage = Increment(s.ByLanguage, e.Language ?? "unknown") },
        RunCompleted e => Ended(s, e.Status, e.DurationMs),
        RunFailed => Ended(s, RunStatus.Error, 0),
        RunAbandoned => Ended(s, RunStatus.Abandoned, 0),
        _ => s,
    };

    private static RunDailyStatistics Ended(RunDailyStatistics s, string status, long durationMs) =>
        s with { Completed = s.Completed + 1, ByStatus = Increment(s.ByStatus, status), TotalDurationMs = s.TotalDurationMs + durationMs };

    private static Dictionary<string, int> Increment(IReadOnlyDictionary<string, int> counts, string key)
    {
        var next = new Dictionary<string, int>(counts);
        next[key] = next.GetValueOrDefault(key) + 1;
        return next;
    }
}

/// <summary>
/// Daily statistics, run by the async daemon. A run's later events do not name its tenant, subject or day, so
/// they are grouped by the run's first event: in the same page when it is there, else the run's summary
/// (written inline with the events, so it exists before the daemon sees them).
/// </summary>
public sealed class RunDailyStatisticsProjection : MultiStreamProjection<RunDailyStatistics, string>
{
    public const string ProjectionName = "run_daily_statistics";

    public RunDailyStatisticsProjection()
    {
        Name = ProjectionName;
        IncludeType<RunRequested>();
        IncludeType<RequestRejected>();
        IncludeType<RunCompleted>();
        IncludeType<RunFailed>();
        IncludeType<RunAbandoned>();
        CustomGrouping(GroupAsync);
    }

    private static async Task GroupAsync(IQuerySession session, IReadOnlyList<IEvent> events, JasperFx.Events.Grouping.IEventGrouping<string> grouping)
    {
        var keys = new Dictionary<Guid, string>();
        foreach (var e in events)
        {
            if (e.Data is RunRequested requested)
                keys[e.StreamId] = RunDailyStatistics.IdOf(requested.Caller.Tenant, requested.Caller.Subject, requested.At);
            else if (e.Data is RequestRejected rejected)
                keys[e.StreamId] = RunDailyStatistics.IdOf(rejected.Caller.Tenant, rejected.Caller.Subject, rejected.At);
        }
        // A batch that holds a run's end but not its start: the run's first event says whose and which day it is.
        foreach (var id in events.Select(e => e.StreamId).Where(id => !keys.ContainsKey(id)).Distinct().ToList())
            switch ((await session.Events.FetchStreamAsync(id, version: 1)).FirstOrDefault()?.Data)
            {
                case RunRequested r: keys[id] = RunDailyStatistics.IdOf(r.Caller.Tenant, r.Caller.Subject, r.At); break;
                case RequestRejected r: keys[id] = RunDailyStatistics.IdOf(r.Caller.Tenant, r.Caller.Subject, r.At); break;
            }
        foreach (var e in events)
            if (keys.TryGetValue(e.StreamId, out var key))
                grouping.AddEvent(key, e);
    }

    public override RunDailyStatistics? Evolve(RunDailyStatistics? snapshot, string id, IEvent e)
    {
        snapshot ??= e.Data switch
        {
            RunRequested r => New(id, r.Caller.Tenant, r.Caller.Subject, r.At),
            RequestRejected r => New(id, r.Caller.Tenant, r.Caller.Subject, r.At),
            _ => FromId(id),
        };
        return RunDailyStatistics.Count(snapshot, e.Data);
    }

    private static RunDailyStatistics New(string id, string tenant, string subject, DateTimeOffset at) =>
        new(id, tenant, subject, DateOnly.FromDateTime(at.UtcDateTime), 0, 0, new Dictionary<string, int>(), new Dictionary<string, int>(), 0);

    // Only when a day's first counted event is not the run's request (events before the daemon's floor).
    private static RunDailyStatistics FromId(string id)
    {
        var parts = id.Split('/');
        return new(id, string.Join('/', parts[..^2]), parts[^2], DateOnly.ParseExact(parts[^1], "yyyy-MM-dd"), 0, 0,
            new Dictionary<string, int>(), new Dictionary<string, int>(), 0);
    }
}
