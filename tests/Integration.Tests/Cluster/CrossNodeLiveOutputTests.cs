using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Sandbox.Audited.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Sandbox.Audited.Tests.Cluster;

/// <summary>
/// Live output through the relay, measured on the four-process cluster: how long a line takes from the program's write on
/// the executor node to a client of an api node, for a client that followed the run from its start and for one that joined
/// another api node after the first output (caught up from the executor's buffer, then live).
/// </summary>
[Collection(ProcessClusterCollection.Name)]
public sealed class CrossNodeLiveOutputTests(ProcessCluster cluster, ITestOutputHelper output) : IAsyncLifetime
{
    public Task InitializeAsync() => cluster.EnsureAllUpAsync();

    public Task DisposeAsync() => Task.CompletedTask;

    [Fact]
    public async Task EachLineReachesAnEarlyAndALateFollowerOnOtherNodesWithinASecondAndEachStreamIsTheRecordedOutput()
    {
        const string tenant = "tenant-cross-latency";
        using var viaA = cluster.Api(0).Runner("dora", tenant);
        using var viaB = cluster.Api(1).Runner("dora", tenant);
        // Each line carries the executor's wall clock when the program wrote it (the same host clock as this test's).
        const string code = "sleep 0.5; echo \"L0 $(date +%s%N)\"; sleep 3; i=1; while [ $i -le 10 ]; do echo \"L$i $(date +%s%N)\"; "
            + "i=$((i+1)); sleep 0.2; done";
        var (accepted, body) = await viaA.RunAsync(new { language = "shell", code, wait = false });
        Assert.Equal(HttpStatusCode.Accepted, accepted.StatusCode);
        var runId = body.Str("runId");

        // Early: on the recording node, from the start. Late: on the other api node, once the early one has L0 (L1 comes 3 s later).
        var l0 = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var early = FollowAsync(viaA, runId, line => l0.TrySetResult());
        await l0.Task.WaitAsync(TimeSpan.FromSeconds(30));
        var late = FollowAsync(viaB, runId);
        var (earlyLines, earlyText, _, _) = await early;
        var (lateLines, lateText, lateJoined, lateAnswered) = await late;

        var (_, run) = await viaA.GetJsonAsync($"/v1/runs/{runId}");
        var recorded = run.Str("stdout.content");
        Assert.Equal(11, recorded.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        // No duplicate, no gap: what each client was sent is the recorded output, byte for byte.
        Assert.Equal(recorded, earlyText);
        Assert.Equal(recorded, lateText);

        output.WriteLine($"early follower (recording api node): {Describe(earlyLines)}");
        output.WriteLine($"late follower (other api node, joined after L0): {Describe(lateLines)}, "
            + $"{(lateLines["L0"].Arrived - lateJoined).TotalMilliseconds:F0} ms after its request, "
            + $"{(lateLines["L0"].Arrived - lateAnswered).TotalMilliseconds:F0} ms after the answer's headers");
        // L0 was written before the late follower joined: it comes from the executor's buffer when it joins, before L1 is written.
        Assert.True(lateLines["L0"].Arrived < lateLines["L1"].Written,
            $"L0 reached the late follower {(lateLines["L0"].Arrived - lateLines["L1"].Written).TotalMilliseconds:F0} ms after L1 was written (from the record, not live)");
        foreach (var (name, lines) in new[] { ("early", earlyLines), ("late", lateLines) })
            for (var i = 1; i <= 10; i++)
                Assert.True(lines[$"L{i}"].Latency < TimeSpan.FromSeconds(1),
                    $"{name} follower: L{i} took {lines[$"L{i}"].Latency.TotalMilliseconds:F0} ms from the executor's write");
    }

    private sealed record Line(DateTimeOffset Written, DateTimeOffset Arrived)
    {
        public TimeSpan Latency => Arrived - Written;
    }

    private static string Describe(Dictionary<string, Line> lines)
    {
        var live = Enumerable.Range(1, 10).Select(i => lines[$"L{i}"].Latency.TotalMilliseconds).Order().ToList();
        return string.Create(CultureInfo.InvariantCulture,
            $"L1..L10 executor write → client p50 {live[4]:F0} ms, max {live[^1]:F0} ms; L0 {lines["L0"].Latency.TotalMilliseconds:F0} ms after its write");
    }

    /// <summary>Reads the run's stream to its end: when each line arrived after its write, and the stdout text sent.</summary>
    private static async Task<(Dictionary<string, Line> Lines, string Stdout, DateTimeOffset Joined, DateTimeOffset Answered)> FollowAsync(
        HttpClient client, string runId, Action<string>? onLine = null)
    {
        var joined = DateTimeOffset.UtcNow;
        using var response = await client.GetAsync($"/v1/runs/{runId}/stream", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var answered = DateTimeOffset.UtcNow;
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var lines = new Dictionary<string, Line>();
        var stdout = new StringBuilder();
        var pending = "";
        var name = "message";
        while (await reader.ReadLineAsync() is { } line)
        {
            var now = DateTimeOffset.UtcNow;
            if (line.StartsWith("event: ", StringComparison.Ordinal))
                name = line["event: ".Length..];
            else if (line.StartsWith("data: ", StringComparison.Ordinal) && name == "end")
                break;
            else if (line.StartsWith("data: ", StringComparison.Ordinal) && name == "stdout")
            {
                var text = JsonNode.Parse(line["data: ".Length..])!["text"]!.GetValue<string>();
                stdout.Append(text);
                pending += text;
                while (pending.IndexOf('\n', StringComparison.Ordinal) is var at and >= 0)
                {
                    var parts = pending[..at].Split(' ');
                    pending = pending[(at + 1)..];
                    var written = DateTimeOffset.UnixEpoch.AddTicks(long.Parse(parts[1], CultureInfo.InvariantCulture) / 100);
                    lines.TryAdd(parts[0], new Line(written, now));
                    onLine?.Invoke(parts[0]);
                }
            }
        }
        return (lines, stdout.ToString(), joined, answered);
    }
}
