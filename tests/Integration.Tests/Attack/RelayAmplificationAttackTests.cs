using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using Sandbox.Audited.Api.Nodes;
using Sandbox.Audited.Tests.Cluster;
using Sandbox.Audited.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Sandbox.Audited.Tests.Attack;

/// <summary>
/// Attack on the catch-up requests of the feed relay: a client that opens and drops a run's stream on an api node that did
/// not record it makes that node ask the executing node for everything it kept (up to 256 KiB per stream), each time. One
/// small GET must not buy a quarter of a megabyte of NOTIFY traffic (sent to every node, through PostgreSQL) over and over.
/// </summary>
[Collection(ClusterCollection.Name)]
public sealed class RelayAmplificationAttackTests(ClusterFixture cluster, ITestOutputHelper output)
{
    [Fact]
    public async Task ReopeningAStreamDoesNotMakeTheExecutorResendItsWholeBufferEachTime()
    {
        const string tenant = "tenant-attack2-amplify";
        var nodeId = "embedded-" + Guid.NewGuid().ToString("N")[..8];
        await using var embedded = cluster.StartNode(nodeId, "api,executor", cluster.Database.AppConnection, new());
        await Eventually.WaitUntilAsync(() => Task.FromResult(cluster.ApiServices.GetRequiredService<FeedRelay>().Relaying
                && embedded.Services.GetRequiredService<FeedRelay>().Relaying),
            () => "the nodes' relays did not start", TimeSpan.FromSeconds(30), pollMs: 50);
        using var viaEmbedded = cluster.Client(embedded, "mallory", tenant);
        using var viaApi = cluster.Api("mallory", tenant);
        const int produced = 200_000;
        var (accepted, body) = await viaEmbedded.RunAsync(new { language = "shell", code = $"head -c {produced} /dev/zero | tr '\\0' x; sleep 10", wait = false });
        Assert.Equal(HttpStatusCode.Accepted, accepted.StatusCode);
        var runId = body.Str("runId");
        await Eventually.WaitUntilAsync(async () => await cluster.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.mt_events WHERE stream_id = $1::uuid AND type = 'sandbox_started'", runId) == 1,
            () => "the run did not start", TimeSpan.FromSeconds(30), pollMs: 50);
        await Task.Delay(1500); // its output is written

        await using var listener = new NpgsqlConnection(cluster.Database.AppConnection);
        await listener.OpenAsync();
        var relayed = new ConcurrentQueue<int>();
        listener.Notification += (_, e) =>
        {
            if (e.Payload.Contains(runId, StringComparison.Ordinal))
                relayed.Enqueue(e.Payload.Length);
        };
        await using (var listen = new NpgsqlCommand($"LISTEN {FeedRelay.Channel}", listener))
            await listen.ExecuteNonQueryAsync();
        using var pump = new CancellationTokenSource();
        var listening = Task.Run(async () =>
        {
            while (!pump.IsCancellationRequested)
                await listener.WaitAsync(TimeSpan.FromMilliseconds(100));
        });

        const int reopen = 15;
        var caughtUp = 0;
        for (var i = 0; i < reopen; i++)
        {
            using var response = await viaApi.GetAsync($"/v1/runs/{runId}/stream", HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            try
            {
                // Until the catch-up's first bytes arrive, then the client drops the stream.
                while (await reader.ReadLineAsync(wait.Token) is { } line)
                    if (line == "event: stdout")
                    {
                        caughtUp++;
                        break;
                    }
            }
            catch (OperationCanceledException)
            {
            }
            response.Dispose();
            await Task.Delay(300); // the dropped stream's follow ends on the api node
        }
        await Task.Delay(1000);
        await pump.CancelAsync();
        await listening;

        var bytes = relayed.Sum();
        // One catch-up of the run's output is about produced * 4/3 characters of base64; allow three.
        var allowed = produced * 4 / 3 * 3;
        output.WriteLine($"{reopen} stream opens ({caughtUp} caught up): {bytes:N0} characters relayed in {relayed.Count} notifications for {produced:N0} bytes of output");
        Assert.True(caughtUp > 0, "no stream was caught up at all");
        Assert.True(bytes <= allowed,
            $"{reopen} stream opens ({caughtUp} caught up) made the executing node relay {bytes:N0} characters in {relayed.Count} notifications for one "
            + $"run's {produced:N0} bytes of output (allowed {allowed:N0})");
    }
}
