using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Api.Metrics;

/// <summary>
/// Counters and histograms in the Prometheus text format (0.0.4), kept by hand: a handful of series does not
/// need an SDK. Run counts come from the events the orchestrator recorded, so they match the audit record.
/// </summary>
public sealed class RunMetrics
{
    private static readonly double[] RunBuckets = [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
    private static readonly double[] HttpBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    private readonly ConcurrentDictionary<Guid, string> _languages = new();
    private readonly ConcurrentDictionary<(string Status, string Language), long> _runs = new();
    private readonly ConcurrentDictionary<string, long> _rejections = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, Histogram> _runDurations = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<(string Method, string Route, int Status), Histogram> _http = new();

    public void Observe(Guid runId, IReadOnlyList<object> events)
    {
        foreach (var data in events)
        {
            switch (data)
            {
                case RunRequested e:
                    _languages[runId] = e.Language;
                    break;
                case RequestRejected e:
                    _languages[runId] = e.Language ?? "unknown";
                    Count(_rejections, e.HttpStatus switch
                    {
                        400 => "invalid_request",
                        401 => "unauthorized",
                        403 => "forbidden",
                        413 => "payload_too_large",
                        429 => "rate_limited",
                        _ => "http_" + e.HttpStatus.ToString(CultureInfo.InvariantCulture),
                    });
                    break;
                case RunCompleted e:
                    var language = Terminal(runId, e.Status);
                    if (e.Status == RunStatus.Denied)
                        Count(_rejections, "policy_denied");
                    else if (e.Status == RunStatus.Refused)
                        Count(_rejections, "capacity");
                    else if (e.Status != RunStatus.Rejected)
                        _runDurations.GetOrAdd(language, _ => new Histogram(RunBuckets)).Observe(e.DurationMs / 1000.0);
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

    public void ObserveHttp(string method, string route, int status, double seconds) =>
        _http.GetOrAdd((method, route, status), _ => new Histogram(HttpBuckets)).Observe(seconds);

    /// <summary>The exposition; gauges are read at scrape time.</summary>
    public string Render(IReadOnlyList<(string Name, string Help, IReadOnlyList<(string Labels, double Value)> Values)> gauges)
    {
        var text = new StringBuilder();
        text.Append("# HELP sandbox_runs_total Runs that reached their terminal event, by status and language.\n# TYPE sandbox_runs_total counter\n");
        foreach (var ((status, language), value) in _runs.OrderBy(r => r.Key))
            text.Append(CultureInfo.InvariantCulture, $"sandbox_runs_total{{status=\"{status}\",language=\"{Escape(language)}\"}} {value}\n");
        text.Append("# HELP sandbox_rejections_total Requests refused, by reason.\n# TYPE sandbox_rejections_total counter\n");
        foreach (var (reason, value) in _rejections.OrderBy(r => r.Key))
            text.Append(CultureInfo.InvariantCulture, $"sandbox_rejections_total{{reason=\"{reason}\"}} {value}\n");
        text.Append("# HELP sandbox_run_duration_seconds Time from request to terminal event of runs that were admitted.\n# TYPE sandbox_run_duration_seconds histogram\n");
        foreach (var (language, histogram) in _runDurations.OrderBy(h => h.Key))
            histogram.Render(text, "sandbox_run_duration_seconds", $"language=\"{Escape(language)}\"");
        text.Append("# HELP sandbox_http_request_duration_seconds HTTP request latency by route and status.\n# TYPE sandbox_http_request_duration_seconds histogram\n");
        foreach (var ((method, route, status), histogram) in _http.OrderBy(h => h.Key))
            histogram.Render(text, "sandbox_http_request_duration_seconds", $"method=\"{method}\",route=\"{Escape(route)}\",status=\"{status}\"");
        foreach (var (name, help, values) in gauges)
        {
            text.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n# TYPE {name} gauge\n");
            foreach (var (labels, value) in values)
                text.Append(CultureInfo.InvariantCulture, $"{name}{(labels.Length > 0 ? "{" + labels + "}" : "")} {value}\n");
        }
        return text.ToString();
    }

    private string Terminal(Guid runId, string status)
    {
        var language = _languages.TryRemove(runId, out var l) ? l : "unknown";
        _runs.AddOrUpdate((status, language), 1, (_, v) => v + 1);
        return language;
    }

    private static void Count(ConcurrentDictionary<string, long> counters, string key) => counters.AddOrUpdate(key, 1, (_, v) => v + 1);

    private static string Escape(string value) => value.Replace("\\", "\\\\").Replace("\"", "\\\"").Replace("\n", "\\n");

    private sealed class Histogram(double[] bounds)
    {
        private readonly long[] _counts = new long[bounds.Length + 1];
        private double _sum;

        public void Observe(double value)
        {
            lock (_counts)
            {
                var i = Array.FindIndex(bounds, b => value <= b);
                _counts[i < 0 ? bounds.Length : i]++;
                _sum += value;
            }
        }

        public void Render(StringBuilder text, string name, string labels)
        {
            lock (_counts)
            {
                long cumulative = 0;
                for (var i = 0; i < bounds.Length; i++)
                {
                    cumulative += _counts[i];
                    text.Append(CultureInfo.InvariantCulture, $"{name}_bucket{{{labels},le=\"{bounds[i]}\"}} {cumulative}\n");
                }
                cumulative += _counts[^1];
                text.Append(CultureInfo.InvariantCulture, $"{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}\n");
                text.Append(CultureInfo.InvariantCulture, $"{name}_sum{{{labels}}} {_sum}\n");
                text.Append(CultureInfo.InvariantCulture, $"{name}_count{{{labels}}} {cumulative}\n");
            }
        }
    }
}
