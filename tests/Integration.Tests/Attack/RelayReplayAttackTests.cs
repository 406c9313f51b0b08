using System.Collections.Concurrent;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using Sandbox.Audited.Api.Nodes;
using Sandbox.Audited.Api.Streaming;
using Sandbox.Audited.Executor.Sandboxes;
using Sandbox.Audited.Tests.Cluster;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Attack;

/// <summary>
/// An attacker's test of the signed relay: any login may LISTEN on the relay's channel, so it sees the nodes' signed payloads
/// and may send them again. A catch-up request sent again must not make the executor resend its kept output.
/// </summary>
[Collection(ClusterCollection.Name)]
public sealed class RelayReplayAttackTests(ClusterFixture cluster)
{
    [Fact]
    public async Task ACatchUpRequestTheAuditorCapturedAndSendsAgainIsNotAnswered()
    {
        await Eventually.WaitUntilAsync(
            () => Task.FromResult(cluster.ApiServices.GetRequiredService<FeedRelay>().Relaying && cluster.ExecutorServices.GetRequiredService<FeedRelay>().Relaying),
            () => "the nodes' relays did not start", TimeSpan.FromSeconds(30), pollMs: 50);
        var runId = Guid.CreateVersion7();
        var executor = cluster.ExecutorServices.GetRequiredService<FeedRelay>();
        using var open = executor.Open(runId, "container-replayed");
        executor.Output(runId, new OutputChunk(OutputStream.Stdout, new byte[40_000]), 0);
        await Task.Delay(300);

        // The read-only auditor's login listens on the relay's channel: no privilege is needed for it.
        await using var attacker = new NpgsqlConnection(cluster.Database.AuditorConnection);
        await attacker.OpenAsync();
        var seen = new ConcurrentQueue<string>();
        attacker.Notification += (_, e) =>
        {
            if (e.Payload.Contains(runId.ToString("D"), StringComparison.Ordinal))
                seen.Enqueue(e.Payload);
        };
        await using (var listen = new NpgsqlCommand($"LISTEN {FeedRelay.Channel}", attacker))
            await listen.ExecuteNonQueryAsync();

        // An api node's client begins following the run: its node asks the executor for what came before (a signed request).
        var feed = cluster.ApiServices.GetRequiredService<RunFeed>();
        using var subscription = feed.Follow(runId, 0);
        cluster.ApiServices.GetRequiredService<FeedRelay>().CatchUp(runId);
        await ListenAsync(attacker, TimeSpan.FromSeconds(2));
        var request = Assert.Single(seen, p => Items(p).Any(i => i["k"]!.GetValue<string>() == "c"));
        var answered = OutputItems(seen);
        Assert.True(answered > 0, "the executor did not answer the node's own catch-up request");

        // Past the executor's once-a-second limit, the captured request again, three times a second apart.
        for (var i = 0; i < 3; i++)
        {
            await Task.Delay(TimeSpan.FromSeconds(1.2));
            await using var notify = new NpgsqlCommand("SELECT pg_notify($1, $2)", attacker);
            notify.Parameters.AddWithValue(FeedRelay.Channel);
            notify.Parameters.AddWithValue(request);
            await notify.ExecuteNonQueryAsync();
        }
        await ListenAsync(attacker, TimeSpan.FromSeconds(1.5));

        Assert.True(OutputItems(seen) == answered,
            $"the executor resent its kept output for a replayed request: {answered} output items answered the node, {OutputItems(seen)} after the replays");
    }

    private static async Task ListenAsync(NpgsqlConnection connection, TimeSpan during)
    {
        var until = DateTime.UtcNow + during;
        while (DateTime.UtcNow < until)
            await connection.WaitAsync(TimeSpan.FromMilliseconds(100));
    }

    private static IEnumerable<JsonNode> Items(string payload) => JsonNode.Parse(payload[(payload.IndexOf('.') + 1)..])!.AsArray().Select(i => i!);

    private static int OutputItems(IEnumerable<string> payloads) => payloads.SelectMany(Items).Count(i => i["k"]!.GetValue<string>() == "o");
}
