using System.Collections.Concurrent;
using System.Net;
using System.Text.Json;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Npgsql;
using Sandbox.Audited.Api.Runs;
using Sandbox.Audited.Api.Streaming;
using Sandbox.Audited.Audit.Queue;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Executor;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Cluster;

/// <summary>The run queue between an api-only and an executor-only node, and the queue's own guarantees, on real PostgreSQL and Docker.</summary>
[Collection(ClusterCollection.Name)]
public sealed class RunQueueTests(ClusterFixture cluster)
{
    [Fact]
    public async Task RunPostedToAnApiNodeRunsOnTheExecutorNode()
    {
        var (response, body) = await cluster.Api("ada", "tenant-cluster").RunAsync(new { language = "python", code = "print(6 * 7)" });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("succeeded", body.Str("status"));
        Assert.Equal("42\n", body.Str("stdout.content"));
        var runId = Guid.Parse(body.Str("runId"));
        Assert.Equal(cluster.ExecutorNode, await cluster.Database.ScalarAsync<string>(
            "SELECT data ->> 'node' FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'sandbox_created'", runId));
        Assert.Equal(cluster.ApiNode, await cluster.Database.ScalarAsync<string>(
            "SELECT data ->> 'queuedBy' FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'run_queued'", runId));
        Assert.Equal("finished", await cluster.Database.ScalarAsync<string>("SELECT state FROM sandbox.run_queue WHERE run_id = $1", runId));
    }

    [Fact]
    public async Task StreamOnTheApiNodeShowsOutputLiveFromTheExecutorNode()
    {
        var api = cluster.Api("lin", "tenant-stream");
        var (accepted, body) = await api.RunAsync(new { language = "python", code = "import time\nprint('one', flush=True)\ntime.sleep(1.5)\nprint('two')", wait = false });
        Assert.Equal(HttpStatusCode.Accepted, accepted.StatusCode);

        var events = await Sandbox.Audited.Tests.Api.AsyncRunTests.ReadStreamAsync(api, $"/v1/runs/{body.Str("runId")}/stream");

        var names = events.Select(e => e.Name).ToList();
        // Live: the first line arrives (relayed from the executor node) before the sandbox's exit is recorded, once, and in order.
        Assert.True(names.IndexOf("stdout") >= 0 && names.IndexOf("stdout") < names.IndexOf("sandbox_exited"), string.Join(",", names));
        Assert.Equal("one\ntwo\n", string.Concat(events.Where(e => e.Name == "stdout").Select(e => e.Data.Str("text"))));
        Assert.Single(events, e => e.Name == "run_completed");
        Assert.Equal("end", names[^1]);
    }

    [Fact]
    public async Task ExecutorOnlyNodeServesHealthButNoApi()
    {
        using var executor = cluster.ExecutorHttp();
        Assert.Equal(HttpStatusCode.OK, (await executor.GetAsync("/healthz")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await executor.GetAsync("/v1/runtimes")).StatusCode);
    }

    [Fact]
    public async Task QueuedRunNotClaimedWithinTheWaitIsRefused()
    {
        var api = cluster.Api("grace", "tenant-refused");
        // The executor has one slot: a sleeping run holds it, so the next one waits in the queue past Admission:MaxQueueWaitMs.
        var (busy, busyBody) = await api.RunAsync(new { language = "python", code = "import time\ntime.sleep(4)", wait = false });
        Assert.Equal(HttpStatusCode.Accepted, busy.StatusCode);
        var busyId = Guid.Parse(busyBody.Str("runId"));
        await Eventually.WaitUntilAsync(async () => await cluster.Database.ScalarAsync<string>("SELECT state FROM sandbox.run_queue WHERE run_id = $1", busyId) == "claimed",
            () => "the sleeping run was never claimed", TimeSpan.FromSeconds(20));

        var (response, body) = await api.RunAsync(new { language = "python", code = "print('late')" });

        Assert.Equal(HttpStatusCode.TooManyRequests, response.StatusCode);
        Assert.NotNull(response.Headers.RetryAfter);
        var runId = Guid.Parse(body.Str("runId"));
        Assert.Equal("refused", await cluster.Database.ScalarAsync<string>("SELECT state FROM sandbox.run_queue WHERE run_id = $1", runId));
        Assert.Equal(["run_requested", "policy_evaluated", "run_queued", "run_completed"], await TypesAsync(runId));
        Assert.Equal("refused", await cluster.Database.ScalarAsync<string>(
            "SELECT data ->> 'status' FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'run_completed'", runId));
        await Eventually.WaitUntilAsync(async () => await cluster.Database.ScalarAsync<string>("SELECT state FROM sandbox.run_queue WHERE run_id = $1", busyId) == "finished",
            () => "the sleeping run did not finish", TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task SilentExecutorsRunIsAbandonedOnlyAfterLeaseExpiryAndGrace()
    {
        var ghost = "ghost-" + Guid.NewGuid().ToString("N")[..6];
        var runId = await ClaimedByAsync(ghost);

        // Lease expired (for less than the grace), but the node still heartbeats: not abandoned (both nodes sweep every second).
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(ClusterFixture.GraceSeconds + 2);
        while (DateTime.UtcNow < until)
        {
            await cluster.Database.ExecuteAsync("UPDATE sandbox.nodes SET heartbeat_at = now() WHERE node_id = $1", ghost);
            await cluster.Database.ExecuteAsync("UPDATE sandbox.run_queue SET lease_until = now() - interval '1 second' WHERE run_id = $1", runId);
            await Task.Delay(300);
        }
        Assert.Equal("claimed", await StateAsync(runId));

        // Silent for longer than the grace, but the lease still holds: not abandoned.
        await cluster.Database.ExecuteAsync("UPDATE sandbox.run_queue SET lease_until = now() + interval '1 hour' WHERE run_id = $1", runId);
        await cluster.Database.ExecuteAsync("UPDATE sandbox.nodes SET heartbeat_at = now() - interval '1 hour' WHERE node_id = $1", ghost);
        await Task.Delay(TimeSpan.FromSeconds(3));
        Assert.Equal("claimed", await StateAsync(runId));
        Assert.DoesNotContain("run_abandoned", await TypesAsync(runId));

        // Both: exactly one RunAbandoned naming the node, however many sweepers saw it.
        await cluster.Database.ExecuteAsync("UPDATE sandbox.run_queue SET lease_until = now() - interval '1 second' WHERE run_id = $1", runId);
        await Eventually.WaitUntilAsync(async () => await StateAsync(runId) == "abandoned", () => "the silent node's run was not abandoned", TimeSpan.FromSeconds(15));
        await Task.Delay(TimeSpan.FromSeconds(2)); // another sweep of both nodes
        var types = await TypesAsync(runId);
        Assert.Single(types, t => t is "run_completed" or "run_failed" or "run_abandoned");
        Assert.Equal("run_abandoned", types[^1]);
        Assert.Equal(ghost, await cluster.Database.ScalarAsync<string>(
            "SELECT data ->> 'node' FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'run_abandoned'", runId));
    }

    [Fact]
    public async Task ARunItsLiveNodeStoppedRenewingIsAbandonedAfterTheGraceSayingSo()
    {
        // The node heartbeats but no longer renews this run's lease: its execution ended without a record.
        var ghost = "ghost-" + Guid.NewGuid().ToString("N")[..6];
        var runId = await ClaimedByAsync(ghost);
        await cluster.Database.ExecuteAsync("UPDATE sandbox.nodes SET heartbeat_at = now() + interval '1 hour' WHERE node_id = $1", ghost);
        await cluster.Database.ExecuteAsync("UPDATE sandbox.run_queue SET lease_until = now() - interval '1 minute' WHERE run_id = $1", runId);

        await Eventually.WaitUntilAsync(async () => await StateAsync(runId) == "abandoned", () => "the unrenewed run was not abandoned", TimeSpan.FromSeconds(15));
        var reason = await cluster.Database.ScalarAsync<string>(
            "SELECT data ->> 'reason' FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'run_abandoned'", runId);
        Assert.Contains($"Executor node '{ghost}' stopped renewing this run's lease although it still heartbeats", reason, StringComparison.Ordinal);
        Assert.Single(await TypesAsync(runId), t => t is "run_completed" or "run_failed" or "run_abandoned");
    }

    [Fact]
    public async Task OutcomeJournaledBeforeAnAbandonmentIsRecordedLateAndNotTerminal()
    {
        var ghost = "ghost-" + Guid.NewGuid().ToString("N")[..6];
        var runId = await ClaimedByAsync(ghost);
        await cluster.Database.ExecuteAsync("UPDATE sandbox.nodes SET heartbeat_at = now() - interval '1 hour' WHERE node_id = $1", ghost);
        await cluster.Database.ExecuteAsync("UPDATE sandbox.run_queue SET lease_until = now() - interval '1 second' WHERE run_id = $1", runId);
        await Eventually.WaitUntilAsync(async () => await StateAsync(runId) == "abandoned", () => "the silent node's run was not abandoned", TimeSpan.FromSeconds(15));

        // The node returns: its journal holds the true outcome it could not commit.
        var store = cluster.ApiServices.GetRequiredService<IDocumentStore>();
        var journal = JournalOf(ghost);
        var at = DateTimeOffset.UtcNow.AddSeconds(-10);
        await journal.KeepAsync(new RunStream(store, runId, new WriteContext("ada", null, Tenant: "tenant-cluster")),
        [
            new SandboxExited(runId, 0, null, false, false, false, 1000, 500, 100, 9000, at),
            new RunCompleted(runId, RunStatus.Succeeded, 0, 12, null, at),
        ]);
        var committed = await journal.CommitAllOnceAsync(CancellationToken.None);

        Assert.Equal([runId], committed);
        var types = await TypesAsync(runId);
        Assert.Equal(["run_abandoned", "sandbox_exited", "late_outcome_recorded"], types[^3..]);
        Assert.Single(types, t => t is "run_completed" or "run_failed" or "run_abandoned");
        using var late = JsonDocument.Parse((await cluster.Database.ScalarAsync<string>(
            "SELECT data::text FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'late_outcome_recorded'", runId))!);
        Assert.Equal(ghost, late.RootElement.GetProperty("node").GetString());
        Assert.Equal("run_completed", late.RootElement.GetProperty("terminal").GetString());
        Assert.Equal("succeeded", late.RootElement.GetProperty("status").GetString());
        var (_, body) = await cluster.Api("ada", "tenant-cluster").GetJsonAsync($"/v1/runs/{runId}");
        Assert.Equal("abandoned", body.Str("status"));
    }

    [Fact]
    public async Task ALateOutcomeWhoseCommitWentThroughUnseenIsRecordedOnceWhenTheFileIsCommittedAgain()
    {
        var node = "late-" + Guid.NewGuid().ToString("N")[..6];
        var store = cluster.ApiServices.GetRequiredService<IDocumentStore>();
        var runId = await RecordedAsync(node);
        await (await RunStream.ResumeAsync(store, runId, new WriteContext("system:sweeper", null), CancellationToken.None))
            .AppendAsync(new RunAbandoned(runId, "silent beyond the grace", node, DateTimeOffset.UtcNow), CancellationToken.None);
        var journal = JournalOf(node);
        var at = DateTimeOffset.UtcNow.AddSeconds(-10);
        await journal.KeepAsync(new RunStream(store, runId, new WriteContext("ada", null, Tenant: "tenant-cluster")),
        [
            new SandboxExited(runId, 0, null, false, false, false, 1000, 500, 100, 9000, at),
            new RunCompleted(runId, RunStatus.Succeeded, 0, 12, null, at),
        ]);
        var path = Path.Combine(journal.Directory, $"{runId:D}.json");
        var kept = await File.ReadAllTextAsync(path);

        Assert.Equal([runId], await journal.CommitAllOnceAsync(CancellationToken.None));
        // The commit went through but the worker never learnt it (its answer was lost): the file is still there, and is
        // committed again a moment later, when the late outcome would be recorded at another time.
        await File.WriteAllTextAsync(path, kept);
        await Task.Delay(20);
        Assert.Equal([runId], await journal.CommitAllOnceAsync(CancellationToken.None));

        Assert.Equal(["run_requested", "policy_evaluated", "run_queued", "run_abandoned", "sandbox_exited", "late_outcome_recorded"], await TypesAsync(runId));
        Assert.Equal(0, journal.Pending);
    }

    [Fact]
    public async Task AJournalFileAddingFactsToARunThatEndedWithItsOwnOutcomeIsSetAsideButARemovalIsCommitted()
    {
        var node = "ended-" + Guid.NewGuid().ToString("N")[..6];
        var store = cluster.ApiServices.GetRequiredService<IDocumentStore>();
        var journal = JournalOf(node);
        var context = new WriteContext("ada", null, Tenant: "tenant-cluster");
        var (added, removed) = (await RecordedAsync(node), await RecordedAsync(node));
        foreach (var runId in new[] { added, removed })
            await (await RunStream.ResumeAsync(store, runId, context, CancellationToken.None))
                .AppendAsync(new RunCompleted(runId, RunStatus.Succeeded, 0, 12, null, DateTimeOffset.UtcNow), CancellationToken.None);
        // Neither an output nor a terminal event: an exit the run's record does not hold, after its end.
        await journal.KeepAsync(new RunStream(store, added, context), [new SandboxExited(added, 137, 9, false, true, false, 1000, 500, 100, 9000, DateTimeOffset.UtcNow)]);
        await journal.KeepAsync(new RunStream(store, removed, context), RunDecisions.Removed(removed, "c0ffee", SandboxRemoval.Removed, DateTimeOffset.UtcNow));

        for (var pass = 0; pass < OutcomeJournal.RejectionsBeforeSetAside; pass++)
            await journal.CommitAllOnceAsync(CancellationToken.None);

        Assert.Equal(["run_requested", "policy_evaluated", "run_queued", "run_completed"], await TypesAsync(added));
        Assert.True(File.Exists(Path.Combine(journal.RejectedDirectory, $"{added:D}.json")), "the file was not set aside");
        Assert.Equal(["run_requested", "policy_evaluated", "run_queued", "run_completed", "sandbox_removed"], await TypesAsync(removed));
        Assert.Equal(0, journal.Pending);
    }

    [Fact]
    public async Task AKeptOutputFileThatDoesNotHashToItsNameIsSetAsideWithItsOutcome()
    {
        var node = "kept-" + Guid.NewGuid().ToString("N")[..6];
        var store = cluster.ApiServices.GetRequiredService<IDocumentStore>();
        var journal = JournalOf(node);
        var runId = await RecordedAsync(node);
        var printed = System.Text.Encoding.UTF8.GetBytes("true output\n");
        var sha = Sha256Hex.Of(printed);
        var stdout = StreamOutput.InStore(sha, printed.Length, printed.Length, false);
        var empty = StreamOutput.InStore(Sha256Hex.Of(""), 0, 0, false);
        // The output the store was away for, kept in a file beside the outcome; the file changes before it is committed.
        await journal.KeepAsync(new RunStream(store, runId, new WriteContext("ada", null, Tenant: "tenant-cluster")),
            [new OutputRecorded(runId, stdout, empty, DateTimeOffset.UtcNow), new RunCompleted(runId, RunStatus.Succeeded, 0, 12, null, DateTimeOffset.UtcNow)],
            spooled: [new KeptContent(sha, printed.Length, _ => Task.FromResult<Stream>(new MemoryStream(printed)))]);
        var kept = Path.Combine(journal.Directory, $"{runId:D}.{sha}.content");
        Assert.Equal(printed, await File.ReadAllBytesAsync(kept));
        Assert.DoesNotContain("\"contents\"", await File.ReadAllTextAsync(Path.Combine(journal.Directory, $"{runId:D}.json")), StringComparison.Ordinal);
        await File.WriteAllTextAsync(kept, "forged output\n");

        for (var pass = 0; pass < OutcomeJournal.RejectionsBeforeSetAside; pass++)
            await journal.CommitAllOnceAsync(CancellationToken.None);

        Assert.Equal(["run_requested", "policy_evaluated", "run_queued"], await TypesAsync(runId));
        Assert.True(File.Exists(Path.Combine(journal.RejectedDirectory, $"{runId:D}.json")), "the outcome was not set aside");
        Assert.True(File.Exists(Path.Combine(journal.RejectedDirectory, $"{runId:D}.{sha}.content")), "its kept output stayed behind");
        Assert.Equal(0, journal.Pending);
    }

    [Fact]
    public async Task RowsMovedToRefusedOrAbandonedWithoutTheirTerminalEventGetItOnceAtRestart()
    {
        // An api node moved these rows, then stopped before the terminal event of the move committed.
        var node = "api-moved-" + Guid.NewGuid().ToString("N")[..6];
        var refused = await RecordedAsync(node);
        var abandoned = await RecordedAsync(node);
        var ended = await RecordedAsync(node);
        await cluster.Database.ExecuteAsync("""
            INSERT INTO sandbox.run_queue (run_id, tenant, payload, state, requested_by, enqueued_at, finished_at)
            VALUES ($1, 'tenant-cluster', '{}', 'refused', $4, now() - interval '2 seconds', now()),
                   ($2, 'tenant-cluster', '{}', 'abandoned', $4, now(), now()),
                   ($3, 'tenant-cluster', '{}', 'refused', $4, now(), now())
            """, refused, abandoned, ended, node);
        var store = cluster.ApiServices.GetRequiredService<IDocumentStore>();
        await (await RunStream.ResumeAsync(store, ended, new WriteContext("ada", null), CancellationToken.None))
            .AppendAsync(new RunCompleted(ended, RunStatus.Refused, null, 1500, "no slot", DateTimeOffset.UtcNow), CancellationToken.None);

        // The node restarts (twice): each run gets the one terminal event its row's move meant, and only once.
        for (var start = 0; start < 2; start++)
            await using (cluster.StartNode(node, "api", cluster.Database.AppConnection, []))
            {
            }

        Assert.Equal(["run_requested", "policy_evaluated", "run_queued", "run_completed"], await TypesAsync(refused));
        Assert.Equal("refused", await cluster.Database.ScalarAsync<string>(
            "SELECT data ->> 'status' FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'run_completed'", refused));
        Assert.InRange(await cluster.Database.ScalarAsync<long>(
            "SELECT (data ->> 'durationMs')::bigint FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'run_completed'", refused), 1900, 2100);
        Assert.Equal(["run_requested", "policy_evaluated", "run_queued", "run_abandoned"], await TypesAsync(abandoned));
        Assert.Contains("it never ran", await cluster.Database.ScalarAsync<string>(
            "SELECT data ->> 'reason' FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'run_abandoned'", abandoned), StringComparison.Ordinal);
        Assert.Equal(["run_requested", "policy_evaluated", "run_queued", "run_completed"], await TypesAsync(ended));
    }

    [Fact]
    public async Task ARowMovedWithoutItsTerminalEventWhileItsNodeRunsGetsItOnceWithoutARestart()
    {
        // The node refused this run (a lost reply, then the store away past the wait budget: its client was answered 202
        // pending). The node keeps running; its heartbeat's pass records the refusal once the row is a lease old.
        var node = "api-moving-" + Guid.NewGuid().ToString("N")[..6];
        await using var running = cluster.StartNode(node, "api", cluster.Database.AppConnection, []);
        var refused = await RecordedAsync(node);
        await cluster.Database.ExecuteAsync("""
            INSERT INTO sandbox.run_queue (run_id, tenant, payload, state, requested_by, enqueued_at, finished_at)
            VALUES ($1, 'tenant-cluster', '{}', 'refused', $2, now() - interval '2 seconds', now())
            """, refused, node);

        await Eventually.WaitUntilAsync(async () => (await TypesAsync(refused)).Contains("run_completed"),
            () => "the moved row's terminal event was not recorded while its node ran", TimeSpan.FromSeconds(30), pollMs: 250);
        await Task.Delay(TimeSpan.FromSeconds(3)); // more passes: still one terminal event
        Assert.Equal(["run_requested", "policy_evaluated", "run_queued", "run_completed"], await TypesAsync(refused));
        Assert.Equal("refused", await cluster.Database.ScalarAsync<string>(
            "SELECT data ->> 'status' FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'run_completed'", refused));
        Assert.Contains("heartbeat's recovery pass", await cluster.Database.ScalarAsync<string>(
            "SELECT data ->> 'reason' FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'run_completed'", refused), StringComparison.Ordinal);
    }

    [Fact]
    public async Task ASecondProcessWithTheNodeIdOfALiveOneRefusesToStartAndTouchesNothingOfIt()
    {
        // The live executor node holds this run (its lease runs for an hour): a twin's start-up would abandon it.
        var runId = await RecordedAsync(cluster.ApiNode);
        await cluster.Database.ExecuteAsync("""
            INSERT INTO sandbox.run_queue (run_id, tenant, payload, state, requested_by, node_id, claimed_at, lease_until)
            VALUES ($1, 'tenant-cluster', '{}', 'claimed', $2, $3, now(), now() + interval '1 hour')
            """, runId, cluster.ApiNode, cluster.ExecutorNode);
        var pool = await PoolContainersAsync(cluster.ExecutorNode);
        Assert.NotEmpty(pool);
        try
        {
            var refused = Assert.ThrowsAny<Exception>(() => cluster.StartNode(cluster.ExecutorNode, "executor", cluster.Database.AppConnection, []));

            Assert.Contains($"Executor:NodeId '{cluster.ExecutorNode}' is in use by another running process", refused.ToString(), StringComparison.Ordinal);
            Assert.Contains("Give each process its own Executor:NodeId", refused.ToString(), StringComparison.Ordinal);
            Assert.Equal("claimed", await StateAsync(runId));
            Assert.DoesNotContain("run_abandoned", await TypesAsync(runId));
            Assert.Subset((await PoolContainersAsync(cluster.ExecutorNode)).ToHashSet(), pool.ToHashSet());
            var (response, body) = await cluster.Api("ada", "tenant-cluster").RunAsync(new { language = "python", code = "print('still here')" });
            Assert.Equal((HttpStatusCode.OK, "succeeded"), (response.StatusCode, body.Str("status")));
        }
        finally
        {
            await cluster.Database.ExecuteAsync("UPDATE sandbox.run_queue SET state = 'finished' WHERE run_id = $1", runId);
        }
    }

    [Fact]
    public async Task AProcessWhoseNodeIdAnotherTookStopsActingAsTheNode()
    {
        var nodeId = "twin-" + Guid.NewGuid().ToString("N")[..6];
        await using var node = cluster.StartNode(nodeId, "executor", cluster.Database.AppConnection, []);
        var lifetime = node.Services.GetRequiredService<Microsoft.Extensions.Hosting.IHostApplicationLifetime>();
        await Task.Delay(TimeSpan.FromSeconds(1.5)); // beats as the node's holder meanwhile
        Assert.False(lifetime.ApplicationStopping.IsCancellationRequested);

        // Another process takes the id (as after this one stalled for longer than the grace): this one must stop, not go on
        // claiming runs and renewing leases under an id that is no longer its own.
        await cluster.Database.ExecuteAsync("UPDATE sandbox.nodes SET instance_id = $2, heartbeat_at = now() WHERE node_id = $1", nodeId, Guid.NewGuid());

        await Eventually.WaitUntilAsync(() => Task.FromResult(lifetime.ApplicationStopping.IsCancellationRequested),
            () => "the process kept acting as the node", TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task ANodeWhosePreviousProcessCrashedTakesItsIdOverOnceTheDeadHeartbeatIsOlderThanTheGraceAndACleanStopGivesItBack()
    {
        // The previous process was killed a moment ago: its last heartbeat is fresh, but it no longer moves.
        var node = "api-crashed-" + Guid.NewGuid().ToString("N")[..6];
        var dead = Guid.NewGuid();
        await cluster.Database.ExecuteAsync(
            "INSERT INTO sandbox.nodes (node_id, roles, instance_id, heartbeat_at) VALUES ($1, 'api', $2, now())", node, dead);
        var watch = System.Diagnostics.Stopwatch.StartNew();
        await using (cluster.StartNode(node, "api", cluster.Database.AppConnection, []))
        {
            Assert.InRange(watch.Elapsed, TimeSpan.FromSeconds(ClusterFixture.GraceSeconds - 0.5), TimeSpan.FromSeconds(ClusterFixture.GraceSeconds + 10));
            Assert.NotEqual(dead, await cluster.Database.ScalarAsync<Guid>("SELECT instance_id FROM sandbox.nodes WHERE node_id = $1", node));
        }
        // A clean stop gave the id back: the next process starts at once.
        Assert.Null(await cluster.Database.ScalarAsync<Guid?>("SELECT instance_id FROM sandbox.nodes WHERE node_id = $1", node));
        await using (cluster.StartNode(node, "api", cluster.Database.AppConnection, []))
            Assert.NotNull(await cluster.Database.ScalarAsync<Guid?>("SELECT instance_id FROM sandbox.nodes WHERE node_id = $1", node));
    }

    [Fact]
    public async Task ANodeKilledOnThisHostIsTakenOverAtOnceWhenItsPidIsGone()
    {
        using var gone = System.Diagnostics.Process.Start("true")!;
        await gone.WaitForExitAsync();
        var node = "api-killed-" + Guid.NewGuid().ToString("N")[..6];
        await cluster.Database.ExecuteAsync(
            "INSERT INTO sandbox.nodes (node_id, roles, instance_id, heartbeat_at, host, pid) VALUES ($1, 'api', $2, now(), $3, $4)",
            node, Guid.NewGuid(), RunQueue.HostIdentity, gone.Id);

        // A grace far longer than a start on a loaded machine: a start that waited it out (or watched the dead heartbeat for a
        // beat) could not come in under it.
        const int grace = 120;
        var watch = System.Diagnostics.Stopwatch.StartNew();
        await using (cluster.StartNode(node, "api", cluster.Database.AppConnection, new() { ["Queue:AbandonGraceSeconds"] = grace.ToString() }))
            Assert.Equal(Environment.ProcessId, await cluster.Database.ScalarAsync<int>("SELECT pid FROM sandbox.nodes WHERE node_id = $1", node));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(grace / 2), $"took {watch.Elapsed}");
    }

    [Fact]
    public async Task AJournalFilePostgresRejectsForGoodIsSetAsideAndTheFilesAfterItAreCommitted()
    {
        // Three journaled outcomes; the first (in commit order) carries a NUL in its reason, which jsonb refuses (22P05).
        var node = "journal-" + Guid.NewGuid().ToString("N")[..6];
        var store = cluster.ApiServices.GetRequiredService<IDocumentStore>();
        var rejected = new ConcurrentQueue<string?>();
        using var listener = JournalRejections(rejected);
        var journal = JournalOf(node);
        var bad = await RecordedAsync(node);
        var good = new[] { await RecordedAsync(node), await RecordedAsync(node) };
        foreach (var runId in new[] { bad }.Concat(good))
            await journal.KeepAsync(new RunStream(store, runId, new WriteContext("ada", null, Tenant: "tenant-cluster")),
            [
                new SandboxExited(runId, 0, null, false, false, false, 1000, 500, 100, 9000, DateTimeOffset.UtcNow),
                new RunCompleted(runId, RunStatus.Succeeded, 0, 12, runId == bad ? "a reason with a \0 NUL" : null, DateTimeOffset.UtcNow),
            ]);
        await journal.KeepAsync(new RunStream(store, bad, new WriteContext("ada", null, Tenant: "tenant-cluster")),
            RunDecisions.Removed(bad, "c0ffee", SandboxRemoval.Removed, DateTimeOffset.UtcNow), "removed");

        await journal.StartAsync(CancellationToken.None);
        try
        {
            foreach (var runId in good)
                await Eventually.WaitUntilAsync(async () => (await TypesAsync(runId)).Contains("run_completed"),
                    () => "a journal file after the rejected one was never committed", TimeSpan.FromSeconds(20));
            await Eventually.WaitUntilAsync(() => Task.FromResult(File.Exists(Path.Combine(journal.RejectedDirectory, $"{bad:D}.json"))),
                () => "the rejected file was not set aside", TimeSpan.FromSeconds(20));
        }
        finally
        {
            await journal.StopAsync(CancellationToken.None);
        }

        Assert.True(File.Exists(Path.Combine(journal.RejectedDirectory, $"{bad:D}.removed.json")), "the rejected run's later part stayed behind");
        Assert.Equal(0, journal.Pending);
        Assert.Empty(journal.HeldRunIds()); // its lease is no longer renewed: the sweeper ends the run
        Assert.Equal(["run_requested", "policy_evaluated", "run_queued"], await TypesAsync(bad));
        Assert.Equal("22", Assert.Single(rejected));
    }

    [Fact]
    public async Task AJournalFileThisVersionCannotReadIsSetAsideAndTheFilesAfterItAreCommitted()
    {
        // Two journaled outcomes; the first names an event type this version does not know (a newer node wrote it).
        var node = "journal-" + Guid.NewGuid().ToString("N")[..6];
        var store = cluster.ApiServices.GetRequiredService<IDocumentStore>();
        var rejected = new ConcurrentQueue<string?>();
        using var listener = JournalRejections(rejected);
        var journal = JournalOf(node);
        var unknown = await RecordedAsync(node);
        var good = await RecordedAsync(node);
        foreach (var runId in new[] { unknown, good })
            await journal.KeepAsync(new RunStream(store, runId, new WriteContext("ada", null, Tenant: "tenant-cluster")),
                [new RunCompleted(runId, RunStatus.Succeeded, 0, 12, null, DateTimeOffset.UtcNow)]);
        var path = Path.Combine(journal.Directory, $"{unknown:D}.json");
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"run_completed\"", "\"run_completed_in_a_later_version\"", StringComparison.Ordinal));

        await journal.StartAsync(CancellationToken.None);
        try
        {
            await Eventually.WaitUntilAsync(async () => (await TypesAsync(good)).Contains("run_completed"),
                () => "the journal file after the unreadable one was never committed", TimeSpan.FromSeconds(20));
            await Eventually.WaitUntilAsync(() => Task.FromResult(File.Exists(Path.Combine(journal.RejectedDirectory, $"{unknown:D}.json"))),
                () => "the unreadable file was not set aside", TimeSpan.FromSeconds(20));
        }
        finally
        {
            await journal.StopAsync(CancellationToken.None);
        }

        Assert.Equal(0, journal.Pending);
        Assert.Equal(["run_requested", "policy_evaluated", "run_queued"], await TypesAsync(unknown));
        Assert.Equal("file", Assert.Single(rejected));
    }

    /// <summary>A journal of its own for a node id, on the in-process api node's services, worked by the test.</summary>
    private OutcomeJournal JournalOf(string node) =>
        new(cluster.ApiServices.GetRequiredService<IDocumentStore>(), cluster.ApiServices.GetRequiredService<Sandbox.Audited.Audit.Evidence.EvidenceStore>(),
            cluster.ApiServices.GetRequiredService<RunFeed>(), cluster.ApiServices.GetRequiredService<RunQueue>(),
            Options.Create(new ExecutorOptions { NodeId = node, JournalDirectory = cluster.JournalDirectory }), NullLogger<OutcomeJournal>.Instance,
            cluster.ApiServices.GetRequiredService<Sandbox.Audited.Api.Metrics.RunMetrics>());

    /// <summary>Collects the class label of every journal file the cluster's api node set aside (sandbox.journal.rejected) while it lives.</summary>
    private System.Diagnostics.Metrics.MeterListener JournalRejections(ConcurrentQueue<string?> classes)
    {
        // Only this node's meter: services of other fixtures in the same test process count their own set-asides.
        var meters = cluster.ApiServices.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>();
        var listener = new System.Diagnostics.Metrics.MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument is { Name: "sandbox.journal.rejected", Meter.Name: Sandbox.Audited.Api.Metrics.RunMetrics.MeterName } && instrument.Meter.Scope == meters)
                l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((_, _, tags, _) => classes.Enqueue(tags.ToArray().Single(t => t.Key == "class").Value as string));
        listener.Start();
        return listener;
    }

    [Fact]
    public async Task ANodeIdGivenBackWhileAnotherProcessAsksForItIsTakenOrRefusedByNameNeverAnError()
    {
        // The holder gives the id back between the refused upsert and the read of who holds it: that read finds no holder.
        await using var fresh = await QueueDatabase.CreateAsync();
        var (database, dataSource) = (fresh.Database, fresh.Source);
        var holder = new RunQueue(dataSource);
        var node = "flapping-node";
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(8));
        var flaps = 0;
        var flapping = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    await holder.RegisterAsync(node, "api", 600, CancellationToken.None);
                    await holder.ReleaseAsync(node, CancellationToken.None);
                    flaps++;
                }
                catch (NodeIdInUseException)
                {
                }
            }
        });
        var taken = 0;
        var refused = 0;
        while (!stop.IsCancellationRequested)
        {
            var asker = new RunQueue(dataSource);
            try
            {
                await asker.RegisterAsync(node, "api", 600, CancellationToken.None);
                Assert.True(asker.HoldsNodeId);
                taken++;
                await asker.ReleaseAsync(node, CancellationToken.None);
            }
            catch (NodeIdInUseException e)
            {
                Assert.NotEqual(Guid.Empty, e.Instance);
                Assert.NotEqual(asker.Instance, e.Instance);
                refused++;
            }
        }
        await flapping;
        Assert.True(flaps > 50 && taken > 0 && refused > 0, $"no contention: {flaps} flaps, {taken} taken, {refused} refused");
    }

    [Fact]
    public async Task ClaimIsExclusiveUnderConcurrentClaimers()
    {
        await using var fresh = await QueueDatabase.CreateAsync();
        var (database, dataSource) = (fresh.Database, fresh.Source);
        var queue = new RunQueue(dataSource);
        var runs = Enumerable.Range(0, 300).Select(i => (RunId: Guid.CreateVersion7(), Tenant: "tenant-" + i % 5)).ToList();
        foreach (var (runId, tenant) in runs)
            await InsertQueuedAsync(database, runId, tenant);

        var claims = new ConcurrentBag<(Guid RunId, string Node)>();
        await Task.WhenAll(Enumerable.Range(0, 8).Select(c => Task.Run(async () =>
        {
            while (await queue.ClaimAsync("claimer-" + c, 1000, 30, 1, CancellationToken.None) is [var claimed])
                claims.Add((claimed.Work.RunId, "claimer-" + c));
        })));

        Assert.Equal(runs.Count, claims.Count);
        Assert.Equal(runs.Select(r => r.RunId).Order(), claims.Select(c => c.RunId).Order());
        Assert.True(claims.Select(c => c.Node).Distinct().Count() > 1, "only one claimer ever won: the claims were not concurrent");
        Assert.Equal(runs.Count, (int)await database.ScalarAsync<long>("SELECT count(*) FROM sandbox.run_queue WHERE state = 'claimed'"));
        foreach (var (runId, node) in claims.Take(20))
            Assert.Equal(node, await database.ScalarAsync<string>("SELECT node_id FROM sandbox.run_queue WHERE run_id = $1", runId));
    }

    [Fact]
    public async Task AClaimReturnedUnstartedIsQueuedAgainForAnyExecutorAndWakesThem()
    {
        await using var fresh = await QueueDatabase.CreateAsync();
        var (database, dataSource) = (fresh.Database, fresh.Source);
        var queue = new RunQueue(dataSource);
        var runId = Guid.CreateVersion7();
        await InsertQueuedAsync(database, runId, "tenant-returned");
        Assert.Equal(runId, Assert.Single(await queue.ClaimAsync("exec-going", 10, 30, 1, CancellationToken.None)).Work.RunId);
        await using var listener = new NpgsqlConnection(database.AppConnection);
        await listener.OpenAsync();
        var woken = new TaskCompletionSource<string>();
        listener.Notification += (_, e) => woken.TrySetResult(e.Payload);
        await using (var listen = new NpgsqlCommand($"LISTEN {RunQueue.QueuedChannel}", listener))
            await listen.ExecuteNonQueryAsync();

        Assert.False(await queue.ReturnAsync(runId, "exec-other", CancellationToken.None)); // not that node's claim
        Assert.True(await queue.ReturnAsync(runId, "exec-going", CancellationToken.None));
        await listener.WaitAsync(TimeSpan.FromSeconds(5));

        Assert.Equal(runId, RunQueue.RunIdsOf(await woken.Task.WaitAsync(TimeSpan.FromSeconds(5))).Single());
        Assert.Equal("queued", await database.ScalarAsync<string>("SELECT state FROM sandbox.run_queue WHERE run_id = $1", runId));
        Assert.Equal(runId, Assert.Single(await queue.ClaimAsync("exec-staying", 10, 30, 1, CancellationToken.None)).Work.RunId);
        Assert.False(await queue.ReturnAsync(runId, "exec-going", CancellationToken.None));
    }

    [Fact]
    public async Task EmbeddedNodesHoldTheTenantCeilingAcrossTheClusterOnTheirFastPath()
    {
        // Two embedded (api,executor) nodes, each with free slots; the tenant may run one sandbox at a time cluster-wide.
        var tenant = "tenant-embedded-" + Guid.NewGuid().ToString("N")[..6];
        var one = new Dictionary<string, string?> { ["Admission:MaxConcurrentRunsPerTenant"] = "1", ["Admission:MaxQueueWaitMs"] = "8000" };
        await using var a = cluster.StartNode("emb-a-" + Guid.NewGuid().ToString("N")[..6], "api,executor", cluster.Database.AppConnection, one);
        await using var b = cluster.StartNode("emb-b-" + Guid.NewGuid().ToString("N")[..6], "api,executor", cluster.Database.AppConnection, one);
        // Long enough that the first still runs when the second is recorded, on a loaded machine too.
        var first = cluster.Client(a, "ada", tenant).RunAsync(new { language = "shell", code = "sleep 5; echo first" });
        await Eventually.WaitUntilAsync(async () => await cluster.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.run_queue WHERE tenant = $1 AND state = 'claimed'", tenant) == 1, () => "the first run was never claimed", TimeSpan.FromSeconds(10));

        var (response, second) = await cluster.Client(b, "ada", tenant).RunAsync(new { language = "shell", code = "echo second" });
        var (firstResponse, firstRun) = await first;

        Assert.Equal((HttpStatusCode.OK, HttpStatusCode.OK), (firstResponse.StatusCode, response.StatusCode));
        Assert.Equal("second\n", second.Str("stdout.content"));
        // The second run was not taken at once on node B: it was recorded queued for any executor (whose claim counts the
        // tenant's runs under the same lock; the fixture's own executor, configured with the default ceiling, may take it).
        var queued = await cluster.Database.ScalarAsync<string>(
            "SELECT data::text FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'run_queued'", Guid.Parse(second.Str("runId")));
        Assert.Null(System.Text.Json.Nodes.JsonNode.Parse(queued!)!["claimedBy"]);
        Assert.Equal("first\n", firstRun.Str("stdout.content"));
    }

    [Fact]
    public async Task AFakeDoneWakeUpDoesNotEndTheWaitForARunStillExecuting()
    {
        // Any role that can log in may NOTIFY: here the auditor's, naming a run the executor node is still running.
        var client = cluster.Api("ada", "tenant-cluster");
        var answer = client.RunAsync(new { language = "shell", code = "sleep 2; echo really-done" });
        Guid runId = default;
        await Eventually.WaitUntilAsync(async () =>
        {
            var id = await cluster.Database.ScalarAsync<Guid?>(
                "SELECT run_id FROM sandbox.run_queue WHERE tenant = 'tenant-cluster' AND state = 'claimed' ORDER BY enqueued_at DESC LIMIT 1");
            runId = id ?? default;
            return id is not null;
        }, () => "the run was never claimed", TimeSpan.FromSeconds(10));
        await using (var auditor = new NpgsqlConnection(cluster.Database.AuditorConnection))
        {
            await auditor.OpenAsync();
            await using var notify = new NpgsqlCommand("SELECT pg_notify($1, $2)", auditor);
            notify.Parameters.AddWithValue(RunQueue.DoneChannel);
            notify.Parameters.AddWithValue(runId.ToString("D"));
            await notify.ExecuteNonQueryAsync();
        }

        var (response, run) = await answer;
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(runId.ToString("D"), run.Str("runId"));
        Assert.Equal("really-done\n", run.Str("stdout.content"));
    }

    [Fact]
    public async Task TenantCeilingHoldsAcrossConcurrentClaimers()
    {
        await using var fresh = await QueueDatabase.CreateAsync();
        var (database, dataSource) = (fresh.Database, fresh.Source);
        var queue = new RunQueue(dataSource);
        for (var i = 0; i < 10; i++)
            await InsertQueuedAsync(database, Guid.CreateVersion7(), "busy-tenant");
        var other = Guid.CreateVersion7();
        await InsertQueuedAsync(database, other, "quiet-tenant");

        var claims = new ConcurrentBag<ClaimedRun>();
        await Task.WhenAll(Enumerable.Range(0, 6).Select(c => Task.Run(async () =>
        {
            while (await queue.ClaimAsync("claimer-" + c, 3, 30, 1, CancellationToken.None) is [var claimed])
                claims.Add(claimed);
        })));

        Assert.Equal(3, claims.Count(c => c.Tenant == "busy-tenant"));
        Assert.Contains(claims, c => c.Work.RunId == other); // a tenant at its ceiling does not hold up the others
        Assert.Equal(7, (int)await database.ScalarAsync<long>("SELECT count(*) FROM sandbox.run_queue WHERE state = 'queued'"));
    }

    [Fact]
    public async Task AClaimSaysWhetherItLeftQueuedRunsBehindForATenantAtItsCeiling()
    {
        await using var fresh = await QueueDatabase.CreateAsync();
        var (database, dataSource) = (fresh.Database, fresh.Source);
        await using var queue = new RunQueue(dataSource);
        for (var i = 0; i < 3; i++)
            await InsertQueuedAsync(database, Guid.CreateVersion7(), "full-tenant");

        // Room for two of the tenant's three runs: the third is looked past, so a slot coming free is worth a claim.
        var first = await queue.ClaimReportingAsync("claimer", 2, 30, 8, CancellationToken.None);
        Assert.Equal(2, first.Runs.Count);
        Assert.True(first.LeftBehind);

        // Once that run is claimed too, a short claim leaves nothing behind: the queue is empty for this node.
        await database.ExecuteAsync("UPDATE sandbox.run_queue SET state = 'finished', finished_at = now() WHERE state = 'claimed'");
        var second = await queue.ClaimReportingAsync("claimer", 2, 30, 8, CancellationToken.None);
        Assert.Single(second.Runs);
        Assert.False(second.LeftBehind);
        var empty = await queue.ClaimReportingAsync("claimer", 2, 30, 8, CancellationToken.None);
        Assert.Equal((0, false), (empty.Runs.Count, empty.LeftBehind));
    }

    [Fact]
    public async Task BatchClaimsTakeEachRunOnceAndHoldTheTenantCeiling()
    {
        await using var fresh = await QueueDatabase.CreateAsync();
        var (database, dataSource) = (fresh.Database, fresh.Source);
        var queue = new RunQueue(dataSource);
        // Interleaved so that every batch meets several tenants: two busy ones (ceiling 4 each) and many small ones.
        var runs = Enumerable.Range(0, 200).Select(i => (RunId: Guid.CreateVersion7(), Tenant: i % 4 < 2 ? "busy-" + i % 2 : "small-" + i)).ToList();
        foreach (var (runId, tenant) in runs)
            await InsertQueuedAsync(database, runId, tenant);

        var claims = new ConcurrentBag<(ClaimedRun Run, string Node, int Batch)>();
        await Task.WhenAll(Enumerable.Range(0, 6).Select(c => Task.Run(async () =>
        {
            while (await queue.ClaimAsync("claimer-" + c, 4, 30, 7, CancellationToken.None) is { Count: > 0 } batch)
                foreach (var run in batch)
                    claims.Add((run, "claimer-" + c, batch.Count));
        })));

        var small = runs.Where(r => r.Tenant.StartsWith("small-", StringComparison.Ordinal)).Select(r => r.RunId).Order();
        Assert.Equal(small, claims.Where(c => c.Run.Tenant.StartsWith("small-", StringComparison.Ordinal)).Select(c => c.Run.Work.RunId).Order());
        Assert.Equal(4, claims.Count(c => c.Run.Tenant == "busy-0"));
        Assert.Equal(4, claims.Count(c => c.Run.Tenant == "busy-1"));
        Assert.Equal(claims.Count, claims.Select(c => c.Run.Work.RunId).Distinct().Count());
        Assert.Contains(claims, c => c.Batch > 1); // claims really came several to a call
        Assert.True(claims.Select(c => c.Node).Distinct().Count() > 1, "only one claimer ever won: the claims were not concurrent");
        Assert.True(claims.All(c => c.Batch <= 7));
        Assert.Equal(runs.Count - claims.Count, (int)await database.ScalarAsync<long>("SELECT count(*) FROM sandbox.run_queue WHERE state = 'queued'"));
        foreach (var (run, node, _) in claims.Take(20))
            Assert.Equal(node, await database.ScalarAsync<string>("SELECT node_id FROM sandbox.run_queue WHERE run_id = $1", run.Work.RunId));
    }

    [Fact]
    public async Task BatchClaimReturnsTheOldestFirstAndNoMoreThanAsked()
    {
        await using var fresh = await QueueDatabase.CreateAsync();
        var (database, dataSource) = (fresh.Database, fresh.Source);
        var queue = new RunQueue(dataSource);
        var runs = new List<Guid>();
        for (var i = 0; i < 5; i++)
        {
            runs.Add(Guid.CreateVersion7());
            await InsertQueuedAsync(database, runs[^1], "tenant-" + i % 2);
        }

        var first = await queue.ClaimAsync("claimer", 10, 30, 3, CancellationToken.None);
        var rest = await queue.ClaimAsync("claimer", 10, 30, 8, CancellationToken.None);

        Assert.Equal(runs[..3], first.Select(c => c.Work.RunId));
        Assert.Equal(runs[3..], rest.Select(c => c.Work.RunId));
        Assert.Empty(await queue.ClaimAsync("claimer", 10, 30, 8, CancellationToken.None));
    }

    [Fact]
    public async Task WakeUpsReachListenersWithTheRowCommitted()
    {
        await using var database = new TestDatabase();
        await database.CreateAsync();
        using var store = DocumentStore.For(o => Sandbox.Audited.Audit.MartenSetup.Configure(o, database.AppConnection));
        await using var listener = new NpgsqlConnection(database.AppConnection);
        await listener.OpenAsync();
        var received = new ConcurrentQueue<(string Channel, string Payload, string? State)>();
        await using var peek = NpgsqlDataSource.Create(database.AppConnection);
        listener.Notification += (_, e) =>
        {
            // What another node sees when woken: the row as committed.
            using var command = peek.CreateCommand("SELECT state FROM sandbox.run_queue WHERE run_id = $1::uuid");
            command.Parameters.AddWithValue(e.Payload);
            received.Enqueue((e.Channel, e.Payload, command.ExecuteScalar() as string));
        };
        await using (var listen = new NpgsqlCommand($"LISTEN {RunQueue.QueuedChannel}; LISTEN {RunQueue.DoneChannel}", listener))
            await listen.ExecuteNonQueryAsync();
        var queue = new RunQueue(peek);
        var runId = Guid.CreateVersion7();

        await using (var session = store.LightweightSession())
        {
            queue.Enqueue(session, Work(runId, "tenant-a"), "tenant-a", "api-node", null, 30);
            await session.SaveChangesAsync();
        }
        await listener.WaitAsync(TimeSpan.FromSeconds(5));
        await using (var session = store.LightweightSession())
        {
            queue.Finish(session, runId);
            await session.SaveChangesAsync();
        }
        await listener.WaitAsync(TimeSpan.FromSeconds(5));

        Assert.Equal([(RunQueue.QueuedChannel, runId.ToString("D"), "queued"), (RunQueue.DoneChannel, runId.ToString("D"), "finished")], received.ToArray());
    }

    [Fact]
    public async Task TheWakeUpsOfOneCommitLeaveTogetherInNotificationsOfAtMost200RunsNamingEveryRunOnce()
    {
        await using var database = new TestDatabase();
        await database.CreateAsync();
        using var store = DocumentStore.For(o => Sandbox.Audited.Audit.MartenSetup.Configure(o, database.AppConnection));
        await using var dataSource = NpgsqlDataSource.Create(database.AppConnection);
        var queue = new RunQueue(dataSource);
        await using var listener = new NpgsqlConnection(database.AppConnection);
        await listener.OpenAsync();
        var received = new ConcurrentQueue<(string Channel, string Payload)>();
        listener.Notification += (_, e) => received.Enqueue((e.Channel, e.Payload));
        await using (var listen = new NpgsqlCommand($"LISTEN {RunQueue.QueuedChannel}; LISTEN {RunQueue.DoneChannel}", listener))
            await listen.ExecuteNonQueryAsync();
        var runs = Enumerable.Range(0, 250).Select(_ => Guid.CreateVersion7()).ToList();

        // One commit of 250 rows: its wake-ups reach the sender together, however busy the machine, and leave in two
        // notifications per channel (at most 200 runs each, to stay under NOTIFY's payload limit).
        await using (var session = store.LightweightSession())
        {
            foreach (var runId in runs)
                queue.Enqueue(session, Work(runId, "tenant-a"), "tenant-a", "api-node", null, 30);
            await session.SaveChangesAsync();
        }
        await using (var session = store.LightweightSession())
        {
            foreach (var runId in runs)
                queue.Finish(session, runId);
            await session.SaveChangesAsync();
        }
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (received.Where(r => r.Channel == RunQueue.DoneChannel).SelectMany(r => RunQueue.RunIdsOf(r.Payload)).Count() < runs.Count && DateTime.UtcNow < until)
            await listener.WaitAsync(TimeSpan.FromSeconds(1));

        foreach (var channel in new[] { RunQueue.QueuedChannel, RunQueue.DoneChannel })
        {
            var notifications = received.Where(r => r.Channel == channel).ToList();
            Assert.Equal(runs.Order(), notifications.SelectMany(n => RunQueue.RunIdsOf(n.Payload)).Order());
            Assert.Equal([200, 50], notifications.Select(n => RunQueue.RunIdsOf(n.Payload).Count()));
            Assert.All(notifications, n => Assert.True(n.Payload.Length < 8000, $"payload of {n.Payload.Length} characters"));
        }
    }

    private static RunWork Work(Guid runId, string tenant) => new(runId,
        new QueuedRequest("python", new string('0', 64), 0, new string('0', 64), 0, [], [], RequestedLimits.None, "internal", "python", "standard"),
        new PolicyDecision(Decision.Allow, "test", [], new RunLimits(1000, 64, 1, 16, 1024, 16), [], []), new Caller("ada", tenant, ["runner"]), null, null);

    private static async Task<List<string>> PoolContainersAsync(string node)
    {
        using var docker = new Docker.DotNet.DockerClientConfiguration(new Uri("unix:///var/run/docker.sock")).CreateClient();
        var containers = await docker.Containers.ListContainersAsync(new Docker.DotNet.Models.ContainersListParameters
        {
            Filters = new Dictionary<string, IDictionary<string, bool>> { ["label"] = new Dictionary<string, bool> { [$"{Sandbox.Audited.Executor.Sandboxes.ContainerSpec.NodeLabel}={node}"] = true } },
        });
        return containers.Select(c => c.ID).ToList();
    }

    private async Task<string?> StateAsync(Guid runId) =>
        await cluster.Database.ScalarAsync<string>("SELECT state FROM sandbox.run_queue WHERE run_id = $1", runId);

    private async Task<List<string>> TypesAsync(Guid runId)
    {
        await using var connection = new NpgsqlConnection(cluster.Database.AdminConnection);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT type FROM sandbox.mt_events WHERE stream_id = $1 ORDER BY version", connection);
        command.Parameters.AddWithValue(runId);
        var types = new List<string>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
            types.Add(reader.GetString(0));
        return types;
    }

    /// <summary>A run recorded as the api records it, claimed by a node that the test plays (heartbeating now).</summary>
    private async Task<Guid> ClaimedByAsync(string node)
    {
        var runId = await RecordedAsync(cluster.ApiNode);
        await cluster.Database.ExecuteAsync("INSERT INTO sandbox.nodes (node_id, roles) VALUES ($1, 'executor')", node);
        await cluster.Database.ExecuteAsync("""
            INSERT INTO sandbox.run_queue (run_id, tenant, payload, state, requested_by, node_id, claimed_at, lease_until)
            VALUES ($1, 'tenant-cluster', '{}', 'claimed', $2, $3, now(), now() + interval '1 hour')
            """, runId, cluster.ApiNode, node);
        return runId;
    }

    /// <summary>A run's write-ahead events as api node apiNode records them (its queue row is the test's to write).</summary>
    private async Task<Guid> RecordedAsync(string apiNode)
    {
        var runId = Guid.CreateVersion7();
        var caller = new Caller("ada", "tenant-cluster", ["runner"]);
        var now = DateTimeOffset.UtcNow;
        var stream = new RunStream(cluster.ApiServices.GetRequiredService<IDocumentStore>(), runId, new WriteContext("ada", null, Tenant: caller.Tenant));
        await stream.AppendAsync(
        [
            new RunRequested(runId, caller, "python", null, new string('0', 64), 0, new string('0', 64), 0, [], [], RequestedLimits.None, "internal",
                new ClientInfo("127.0.0.1", "test", null, null), apiNode, now, InputsStored: true),
            new PolicyEvaluated(runId, Decision.Allow, "test", [], new RunLimits(1000, 64, 1, 16, 1024, 16), [], [], now),
            new RunQueued(runId, apiNode, null, now),
        ], CancellationToken.None);
        return runId;
    }

    /// <summary>A throw-away database with the queue's schema and a data source on it, for the queue's own guarantees.</summary>
    private sealed class QueueDatabase : IAsyncDisposable
    {
        public required TestDatabase Database { get; init; }
        public required NpgsqlDataSource Source { get; init; }

        public static async Task<QueueDatabase> CreateAsync()
        {
            var database = new TestDatabase();
            await database.CreateAsync();
            return new QueueDatabase { Database = database, Source = NpgsqlDataSource.Create(database.AppConnection) };
        }

        public async ValueTask DisposeAsync()
        {
            await Source.DisposeAsync();
            await Database.DisposeAsync();
        }
    }

    private static async Task InsertQueuedAsync(TestDatabase database, Guid runId, string tenant) =>
        await database.ExecuteAsync("INSERT INTO sandbox.run_queue (run_id, tenant, payload, requested_by) VALUES ($1, $2, $3::jsonb, 'test')",
            runId, tenant, JsonSerializer.Serialize(Work(runId, tenant), RunQueue.Json));
}
