using System.Diagnostics.Metrics;
using System.Collections.Concurrent;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Api.Metrics;

/// <summary>
/// The service's own instruments on the "Sandbox.Audited" meter, exported by OpenTelemetry at /metrics. Run counts
/// come from the events the orchestrator recorded, so they match the audit record. Every label value comes from a
/// fixed set: a language outside the catalogue and a status or reason not listed here are counted as "other".
/// </summary>
public sealed class RunMetrics
{
    public const string MeterName = "Sandbox.Audited";
    public const string Other = "other";

    private static readonly double[] RunBuckets = [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

    private static readonly HashSet<string> Statuses = new(StringComparer.Ordinal)
    {
        RunStatus.Succeeded, RunStatus.Failed, RunStatus.TimedOut, RunStatus.MemoryExceeded, RunStatus.PidsExhausted,
        RunStatus.OutputTruncated, RunStatus.Denied, RunStatus.Rejected, RunStatus.Refused, RunStatus.Error, RunStatus.Abandoned,
    };

    private readonly ConcurrentDictionary<Guid, string> _languages = new();
    private readonly Meter _meter;
    private readonly Counter<long> _runs;
    private readonly Counter<long> _rejections;
    private readonly Histogram<double> _runDuration;
    private readonly Counter<long> _journalRejected;

    public RunMetrics(IMeterFactory meters)
    {
        _meter = meters.Create(MeterName);
        _runs = _meter.CreateCounter<long>("sandbox.runs", "{run}", "Runs that reached their terminal event, by status and language.");
        _rejections = _meter.CreateCounter<long>("sandbox.rejections", "{request}", "Requests refused, by reason.");
        _journalRejected = _meter.CreateCounter<long>("sandbox.journal.rejected", "{file}",
            "Journal files PostgreSQL rejected for good and that were set aside under rejected/, by the class of its error.");
        _runDuration = _meter.CreateHistogram("sandbox.run.duration", "s", "Time from request to terminal event of runs that were admitted.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = RunBuckets });
    }

    /// <summary>A label value from the language catalogue, or "other": a client's string never becomes a series.</summary>
    public static string LanguageLabel(string? language) =>
        language is not null && Languages.All.Contains(language, StringComparer.Ordinal) ? language : Other;

    public static string StatusLabel(string status) => Statuses.Contains(status) ? status : Other;

    /// <summary>Gauges read at scrape time from the parts that hold the numbers.</summary>
    public void Watch(Func<int> queued, Func<int> running, Func<string, int> poolSize, Func<int> subscribers)
    {
        _meter.CreateObservableGauge("sandbox.admission.queue_depth", () => queued(), "{run}", "Runs waiting for a sandbox slot.");
        _meter.CreateObservableGauge("sandbox.admission.running", () => running(), "{run}", "Runs holding a sandbox slot.");
        _meter.CreateObservableGauge("sandbox.pool.size",
            () => Languages.All.Select(l => new Measurement<int>(poolSize(l), new KeyValuePair<string, object?>("language", l))),
            "{sandbox}", "Warm sandboxes ready to take a run, by language.");
        _meter.CreateObservableGauge("sandbox.stream.subscribers", () => subscribers(), "{connection}", "Open GET /v1/runs/{id}/stream connections.");
    }

    public void Observe(Guid runId, IReadOnlyList<object> events)
    {
        foreach (var data in events)
        {
            switch (data)
            {
                case RunRequested e:
                    _languages[runId] = LanguageLabel(e.Language);
                    break;
                case RequestRejected e:
                    _languages[runId] = LanguageLabel(e.Language);
                    Reject(e.HttpStatus switch
                    {
                        400 => "invalid_request",
                        401 => "unauthorized",
                        403 => "forbidden",
                        413 => "payload_too_large",
                        429 => "rate_limited",
                        _ => Other,
                    });
                    break;
                case RunCompleted e:
                    var language = Terminal(runId, e.Status);
                    if (e.Status == RunStatus.Denied)
                        Reject("policy_denied");
                    else if (e.Status == RunStatus.Refused)
                        Reject("capacity");
                    else if (e.Status != RunStatus.Rejected)
                        _runDuration.Record(e.DurationMs / 1000.0, new KeyValuePair<string, object?>("language", language));
                    break;
                case RunFailed:
                    Terminal(runId, RunStatus.Error);
                    break;
                case RunAbandoned:
                    Terminal(runId, RunStatus.Abandoned);
                    break;
            }
        }
    }

    private string Terminal(Guid runId, string status)
    {
        var language = _languages.TryRemove(runId, out var l) ? l : Other;
        _runs.Add(1, new KeyValuePair<string, object?>("status", StatusLabel(status)), new KeyValuePair<string, object?>("language", language));
        return language;
    }

    /// <summary>
    /// A journal file set aside; the label is the SQLSTATE class (22 data, 23 integrity, 54 program limit), "file" for a
    /// file this version could not read as events, or "other".
    /// </summary>
    public void JournalRejected(string? code) =>
        _journalRejected.Add(1, new KeyValuePair<string, object?>("class",
            code is "file" ? code : code is { Length: 5 } && code[..2] is "22" or "23" or "54" ? code[..2] : Other));

    private void Reject(string reason) => _rejections.Add(1, new KeyValuePair<string, object?>("reason", reason));
}
