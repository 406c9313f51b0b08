using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace Sandbox.Audited.Bench;

/// <summary>One run as the client saw it, with the server's own account of its phases (Server-Timing, ms).</summary>
public sealed record RunSample(double Ms, bool FromPool, string Status, IReadOnlyDictionary<string, double> Phases);

/// <summary>Drives the real service over HTTP with a real token, the way a client does; by default with python print(1).</summary>
public sealed class ServiceLoad(HttpClient http, object? request = null)
{
    private static readonly object PrintOne = new { language = "python", code = "print(1)" };

    /// <summary>The same service driven with another request (another runtime or isolation class).</summary>
    public ServiceLoad With(object other) => new(http, other);

    public async Task<RunSample> RunOnceAsync()
    {
        var watch = Stopwatch.StartNew();
        using var response = await http.PostAsJsonAsync("/v1/runs", request ?? PrintOne);
        var body = JsonNode.Parse(await response.Content.ReadAsStringAsync());
        watch.Stop();
        var status = body?["status"]?.ToString() ?? $"http {(int)response.StatusCode}";
        return new RunSample(watch.Elapsed.TotalMilliseconds, body?["sandbox"]?["fromPool"]?.GetValue<bool>() ?? false, status, PhasesOf(response));
    }

    // "record;dur=3.1, sandbox;dur=0.2, ..." -> { record: 3.1, sandbox: 0.2, ... }
    private static Dictionary<string, double> PhasesOf(HttpResponseMessage response)
    {
        var phases = new Dictionary<string, double>();
        if (!response.Headers.TryGetValues("Server-Timing", out var values))
            return phases;
        foreach (var metric in values.SelectMany(v => v.Split(',')))
        {
            var parts = metric.Split(';', StringSplitOptions.TrimEntries);
            var duration = parts.Skip(1).FirstOrDefault(p => p.StartsWith("dur=", StringComparison.Ordinal));
            if (duration is not null && double.TryParse(duration[4..], System.Globalization.CultureInfo.InvariantCulture, out var ms))
                phases[parts[0]] = ms;
        }
        return phases;
    }

    /// <summary>
    /// `clients` loops of `runsPerClient` synchronous runs. `pause` lets the warm pool refill between runs:
    /// a pooled sandbox serves one run only, so sustained warm latency needs refills to keep up.
    /// </summary>
    public async Task<List<RunSample>> LatencyAsync(int clients, int runsPerClient, TimeSpan pause)
    {
        var samples = new List<RunSample>();
        await Task.WhenAll(Enumerable.Range(0, clients).Select(async _ =>
        {
            for (var i = 0; i < runsPerClient; i++)
            {
                var sample = await RunOnceAsync();
                lock (samples)
                    samples.Add(sample);
                if (pause > TimeSpan.Zero)
                    await Task.Delay(pause);
            }
        }));
        return samples;
    }

    /// <summary>Completed runs per second with `clients` back-to-back for `duration`.</summary>
    public async Task<(double PerSecond, int Completed, int NotSucceeded)> ThroughputAsync(int clients, TimeSpan duration)
    {
        var completed = 0;
        var failed = 0;
        var until = DateTime.UtcNow + duration;
        var watch = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, clients).Select(async _ =>
        {
            while (DateTime.UtcNow < until)
            {
                var sample = await RunOnceAsync();
                if (sample.Status == "succeeded")
                    Interlocked.Increment(ref completed);
                else
                    Interlocked.Increment(ref failed);
            }
        }));
        return (completed / watch.Elapsed.TotalSeconds, completed, failed);
    }
}
