using Marten;
using Microsoft.Extensions.Options;
using Npgsql;
using Sandbox.Audited.Audit;
using Sandbox.Audited.Audit.Queue;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Executor;
using Sandbox.Audited.Executor.Pool;

namespace Sandbox.Audited.Api.Runs;

public sealed class ShutdownOptions
{
    public const string Section = "Shutdown";

    /// <summary>How long running runs may finish after SIGTERM before they are stopped and recorded.</summary>
    public int GraceSeconds { get; set; } = 20;

    /// <summary>
    /// How long after SIGTERM the node at least keeps listening, answering new runs and /readyz with 503 and Retry-After, so
    /// that clients are refused cleanly instead of finding no server; behind a load balancer, as long as it takes to see
    /// /readyz fail (probe interval times failure threshold). Runs the grace in parallel, not after it.
    /// </summary>
    public int DrainSeconds { get; set; } = 1;

    /// <summary>The host's own shutdown limit: the longer of the two windows, plus the last removals and hosted services' stops.</summary>
    public TimeSpan HostTimeout => TimeSpan.FromSeconds(Math.Max(GraceSeconds, DrainSeconds) + 20);
}

/// <summary>
/// Start-up: remove this node's orphaned containers, then give every run this node left unfinished its
/// RunAbandoned. Shutdown: stop admitting, let running runs finish within the grace period, stop the rest.
/// </summary>
public sealed partial class RunLifecycle(
    IDocumentStore store,
    NpgsqlDataSource dataSource,
    Reaper reaper,
    RunOrchestrator orchestrator,
    OutcomeJournal journal,
    IRemovalLog removals,
    RunQueue queue,
    IOptions<NodeOptions> node,
    Admission admission,
    Sandbox.Audited.Executor.Docker.DockerEngine docker,
    IOptions<ExecutorOptions> executor,
    IOptions<ShutdownOptions> shutdown,
    IOptions<QueueOptions> queueOptions,
    TimeProvider clock,
    ILogger<RunLifecycle> logger) : IHostedLifecycleService
{
    public async Task StartAsync(CancellationToken ct)
    {
        IReadOnlyList<(string ContainerId, string? RunLabel)> swept = [];
        try
        {
            if (node.Value.Executor) // an api-only node has no engine and no containers
                swept = await reaper.ReapAsync(startup: true, ct);
        }
        catch (Exception e)
        {
            LogStartupReapFailed(e);
        }
        // What a crash between the journal's writes left behind goes first: nothing writes or commits there yet.
        journal.RemoveOrphans();
        // Outcomes a previous process journaled are true outcomes: they are committed before anything is abandoned.
        await journal.CommitAllOnceAsync(ct);
        var sweptIds = swept.Select(s => s.ContainerId).ToHashSet();
        foreach (var (runId, containers, queueState, claimedBy, requestedBy, waitedMs, movedAt) in await UnfinishedRunsAsync(ct))
        {
            if (journal.Holds(runId))
                continue; // its outcome is known and waits for the store; the journal worker commits it
            // Its row was moved to refused or abandoned, but the terminal event of that move was never committed.
            if (queueState is "refused" or "abandoned")
            {
                await EndMovedRowAsync(runId, new MovedRow(queueState, requestedBy, claimedBy, waitedMs, movedAt ?? clock.GetUtcNow()), atRestart: true, ct);
                continue;
            }
            // A run still waiting in the queue: left to the executors when the previous process stopped cleanly (it drained and
            // left it there); after a crash, abandoned only if no executor claims it first (the move decides).
            if (queueState == "queued" && (_previousStoppedCleanly || !await queue.AbandonQueuedAsync(runId, ct)))
                continue;
            var stream = await RunStream.ResumeAsync(store, runId, new WriteContext("system:recovery", null), ct);
            var nodeId = executor.Value.NodeId;
            await stream.AppendAsync(RunDecisions.Abandon(runId, nodeId, containers, sweptIds, clock.GetUtcNow(), waitedInQueue: queueState == "queued"), ct,
                queueState == "claimed" ? session => queue.MarkAbandoned(session, runId, nodeId) : null);
            LogAbandoned(runId);
        }
        // After the abandonment, so that each run's terminal event is followed by the removal of its sandbox.
        foreach (var (containerId, runLabel) in swept)
            await removals.RecordAsync(containerId, runLabel, SandboxRemoval.SweptAtStartup, ct);
        if (node.Value.Executor)
            await RecordVanishedAsync(sweptIds, ct);
        _recovered = true;
    }

    // The node's previous process gave its id back (SIGTERM): the runs it left queued were answered and stay for the executors.
    private bool _previousStoppedCleanly;

    /// <summary>
    /// First of all: a second process given the node id of a live one stops here, before it reaps that one's containers or
    /// abandons its runs. A holder on this host whose pid no longer runs crashed (kill -9): taken over at once. Otherwise the
    /// holder is live when its heartbeat moves on while this process watches; one that does not (a crashed process of this
    /// node elsewhere) is taken over once its last heartbeat is older than Queue:AbandonGraceSeconds.
    /// </summary>
    private async Task TakeNodeIdAsync(CancellationToken ct)
    {
        var options = queueOptions.Value;
        DateTimeOffset? seen = null;
        Guid? dead = null;
        while (true)
        {
            try
            {
                _previousStoppedCleanly = await queue.RegisterAsync(executor.Value.NodeId, node.Value.Roles, options.AbandonGraceSeconds, ct, dead);
                return;
            }
            catch (NodeIdInUseException e) when (dead != e.Instance && e.Host == RunQueue.HostIdentity && !string.IsNullOrEmpty(e.Host) && e.Pid is { } pid && !ProcessRuns(pid))
            {
                dead = e.Instance;
                continue;
            }
            catch (NodeIdInUseException e) when (seen is null || e.HeartbeatAt == seen)
            {
                if (seen is null)
                    LogWaitingForNodeId(executor.Value.NodeId, options.AbandonGraceSeconds);
                seen = e.HeartbeatAt;
            }
            catch (NodeIdInUseException e)
            {
                LogNodeIdInUse(e.Message);
                throw;
            }
            await Task.Delay(TimeSpan.FromSeconds(Math.Max(1, options.HeartbeatSeconds)) * 1.5, clock, ct);
        }
    }

    private static bool ProcessRuns(int pid)
    {
        try
        {
            using var process = System.Diagnostics.Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    /// <summary>
    /// A crash between the engine's removal and its record leaves a run whose container is gone but not recorded removed:
    /// what the engine no longer has at restart is recorded as already gone.
    /// </summary>
    private async Task RecordVanishedAsync(HashSet<string> swept, CancellationToken ct)
    {
        var sql = $"""
            SELECT c.stream_id, c.data ->> 'containerId' FROM {MartenSetup.Schema}.mt_events c
            WHERE c.type = 'sandbox_created' AND c.data ->> 'node' = $1
              AND NOT EXISTS (SELECT 1 FROM {MartenSetup.Schema}.mt_events r WHERE r.stream_id = c.stream_id
                              AND r.type = 'sandbox_removed' AND r.data ->> 'containerId' = c.data ->> 'containerId')
            """;
        var unrecorded = new List<(Guid RunId, string ContainerId)>();
        await using (var command = dataSource.CreateCommand(sql))
        {
            command.Parameters.AddWithValue(executor.Value.NodeId);
            await using var reader = await command.ExecuteReaderAsync(ct);
            while (await reader.ReadAsync(ct))
                unrecorded.Add((reader.GetGuid(0), reader.GetString(1)));
        }
        if (unrecorded.Count == 0)
            return;
        var present = (await docker.ListByLabelAsync($"{Sandbox.Audited.Executor.Sandboxes.ContainerSpec.NodeLabel}={executor.Value.NodeId}", ct))
            .Select(c => c.ID).ToHashSet();
        foreach (var (runId, containerId) in unrecorded.Where(u => !present.Contains(u.ContainerId) && !swept.Contains(u.ContainerId)))
        {
            var stream = await RunStream.ResumeAsync(store, runId, new WriteContext("system:recovery", null), ct);
            await stream.AppendAsync(RunDecisions.Removed(runId, containerId, SandboxRemoval.AlreadyGone, clock.GetUtcNow()), ct);
        }
    }

    // Shutdown runs in StoppingAsync, which the host calls before any StopAsync: the HTTP server still answers
    // the waiting clients, and the pool and the Docker client are still there for the last removals.
    public async Task StoppingAsync(CancellationToken ct)
    {
        admission.Drain(); // readiness and new runs answer 503 from here on, before admission closes
        orchestrator.StopAdmitting();
        // Kestrel stops listening only after this returns: the drain window keeps 503s coming instead of refused connections.
        var window = Task.Delay(TimeSpan.FromSeconds(Math.Max(0, shutdown.Value.DrainSeconds)), CancellationToken.None);
        var running = SettledAsync();
        var grace = Task.Delay(TimeSpan.FromSeconds(shutdown.Value.GraceSeconds), ct);
        if (await Task.WhenAny(running, grace) != running)
        {
            LogGraceExceeded(orchestrator.InFlight, admission.Running);
            orchestrator.AbortRemaining();
            await Task.WhenAny(running, Task.Delay(TimeSpan.FromSeconds(5), CancellationToken.None));
        }
        var removals = Task.WhenAll(orchestrator.PendingRemovals);
        if (await Task.WhenAny(removals, Task.Delay(TimeSpan.FromSeconds(10), CancellationToken.None)) != removals)
            LogRemovalsPending(orchestrator.PendingRemovals.Count);
        await window;
    }

    // The periodic pass looks at rows moved from here on; the first pass looks at them all, as the start-up pass did.
    private DateTimeOffset _movedSince = DateTimeOffset.MinValue;

    // The periodic pass waits for start-up recovery, which ends the same rows.
    private volatile bool _recovered;

    /// <summary>Rows one periodic pass ends at most; the next tick goes on from where it stopped.</summary>
    public const int MovedRowsPerPass = 100;

    /// <summary>
    /// While the node runs, what its restart would do for a moved row: this node's rows moved to refused or abandoned at least
    /// Queue:LeaseSeconds ago whose terminal event never committed (the store stayed away through the run's whole wait budget
    /// and its client was answered 202 pending) get the one terminal event the move meant. A run still in flight here or
    /// held by the journal is left to its own commit. Returns how many this pass recorded.
    /// </summary>
    public async Task<int> EndMovedRowsAsync(CancellationToken ct)
    {
        if (!_recovered)
            return 0;
        var sql = $"""
            SELECT q.run_id, q.state, q.node_id, COALESCE((extract(epoch FROM q.finished_at - q.enqueued_at) * 1000)::bigint, 0),
                   q.finished_at, b.until, q.requested_by
            FROM (SELECT now() - make_interval(secs => $3) AS until) b
            LEFT JOIN sandbox.run_queue q
              ON q.state IN ('abandoned', 'refused') AND (q.requested_by = $1 OR q.node_id = $1)
             AND q.finished_at >= $2 AND q.finished_at < b.until
             AND {Unended("q.run_id")}
            ORDER BY q.finished_at
            LIMIT {MovedRowsPerPass}
            """;
        var rows = new List<(Guid RunId, MovedRow Row)>();
        DateTimeOffset until;
        await using (var command = dataSource.CreateCommand(sql))
        {
            command.Parameters.AddWithValue(executor.Value.NodeId);
            command.Parameters.AddWithValue(_movedSince);
            command.Parameters.AddWithValue((double)queueOptions.Value.LeaseSeconds);
            await using var reader = await command.ExecuteReaderAsync(ct);
            until = DateTimeOffset.MaxValue;
            while (await reader.ReadAsync(ct))
            {
                until = reader.GetFieldValue<DateTimeOffset>(5);
                if (!reader.IsDBNull(0))
                    rows.Add((reader.GetGuid(0), new MovedRow(reader.GetString(1), reader.IsDBNull(6) ? null : reader.GetString(6),
                        reader.IsDBNull(2) ? null : reader.GetString(2), reader.GetInt64(3), reader.GetFieldValue<DateTimeOffset>(4))));
            }
        }
        var recorded = 0;
        DateTimeOffset? oldestLeft = null;
        var inFlight = orchestrator.InFlightRunIds.ToHashSet();
        foreach (var (runId, row) in rows)
        {
            if (inFlight.Contains(runId) || journal.Holds(runId) || !await EndMovedRowAsync(runId, row, atRestart: false, ct))
                oldestLeft ??= row.MovedAt;
            else
                recorded++;
        }
        // A full batch: the rows after it (from the last one's time on) are the next pass's.
        _movedSince = oldestLeft ?? (rows.Count == MovedRowsPerPass ? rows[^1].Row.MovedAt : until);
        return recorded;
    }

    /// <summary>
    /// Appends the terminal event a row's move meant, at the version read here: false when the stream already ended or
    /// another writer appended meanwhile.
    /// </summary>
    private async Task<bool> EndMovedRowAsync(Guid runId, MovedRow row, bool atRestart, CancellationToken ct)
    {
        if (RunDecisions.EndMovedRow(runId, row, executor.Value.NodeId, atRestart) is not { } ending)
            return false;
        if (await RunStream.ResumeUnlessEndedAsync(store, runId, new WriteContext("system:recovery", null), ct) is not { } stream)
            return false; // it ended between the query and this read
        try
        {
            await stream.AppendAsync(ending, ct);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            LogMovedRowConflict(e, runId);
            return false;
        }
        LogMovedRowEnded(runId, row.State);
        return true;
    }

    /// <summary>
    /// Every run in flight has ended and every slot is free. A run the queue worker claimed with slots it took just before
    /// admission closed joins the in-flight runs only once its record is resumed, after the first look: its slot is held
    /// from before the claim, so shutdown waits for the slots too, and looks again until both are empty.
    /// </summary>
    private async Task SettledAsync()
    {
        while (orchestrator.InFlightTasks is var inFlight && (inFlight.Count > 0 || admission.Running > 0))
            await Task.WhenAny(Task.WhenAll(inFlight), Task.Delay(TimeSpan.FromMilliseconds(50), CancellationToken.None));
    }

    public Task StopAsync(CancellationToken ct) => Task.CompletedTask;

    // Before any hosted service starts (policy activation records, the daemon, heartbeats): a process refused the node id
    // leaves nothing behind in the node's name.
    public Task StartingAsync(CancellationToken ct) => TakeNodeIdAsync(ct);

    public Task StartedAsync(CancellationToken ct) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken ct) => Task.CompletedTask;

    /// <summary>
    /// This node's runs without a terminal event, each with the containers recorded for it and its queue state: the runs it
    /// claimed as an executor, those it recorded as an api node that still wait in the queue, those whose row it moved to
    /// refused or abandoned without the terminal event committing, and (from before the queue) those without a queue row.
    /// </summary>
    private async Task<List<(Guid RunId, List<string> Containers, string? QueueState, string? ClaimedBy, string? RequestedBy, long WaitedMs, DateTimeOffset? MovedAt)>> UnfinishedRunsAsync(
        CancellationToken ct)
    {
        var sql = $"""
            WITH mine AS (
                SELECT q.run_id, q.state, q.node_id, q.requested_by, q.enqueued_at, q.finished_at FROM sandbox.run_queue q
                WHERE (q.state = 'claimed' AND q.node_id = $1) OR (q.state = 'queued' AND q.requested_by = $1)
                   OR (q.state IN ('abandoned', 'refused') AND (q.requested_by = $1 OR q.node_id = $1))
                UNION ALL
                SELECT e.stream_id, NULL, NULL, NULL, NULL::timestamptz, NULL::timestamptz FROM {MartenSetup.Schema}.mt_events e
                WHERE e.type = 'run_requested' AND e.data ->> 'node' = $1
                  AND NOT EXISTS (SELECT 1 FROM sandbox.run_queue q WHERE q.run_id = e.stream_id))
            SELECT m.run_id, ARRAY(SELECT c.data ->> 'containerId' FROM {MartenSetup.Schema}.mt_events c
                                   WHERE c.stream_id = m.run_id AND c.type = 'sandbox_created'), m.state, m.node_id,
                   COALESCE((extract(epoch FROM m.finished_at - m.enqueued_at) * 1000)::bigint, 0), m.finished_at, m.requested_by
            FROM mine m
            WHERE {Unended("m.run_id")}
            """;
        await using var command = dataSource.CreateCommand(sql);
        command.Parameters.AddWithValue(executor.Value.NodeId);
        var runs = new List<(Guid, List<string>, string?, string?, string?, long, DateTimeOffset?)>();
        await using var reader = await command.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
            runs.Add((reader.GetGuid(0), reader.GetFieldValue<string[]>(1).ToList(), reader.IsDBNull(2) ? null : reader.GetString(2),
                reader.IsDBNull(3) ? null : reader.GetString(3), reader.IsDBNull(6) ? null : reader.GetString(6), reader.GetInt64(4),
                reader.IsDBNull(5) ? null : reader.GetFieldValue<DateTimeOffset>(5)));
        return runs;
    }

    /// <summary>SQL: the run (a column or expression) has no terminal event yet.</summary>
    private static string Unended(string runId) =>
        $"NOT EXISTS (SELECT 1 FROM {MartenSetup.Schema}.mt_events t WHERE t.stream_id = {runId} AND t.type IN "
        + $"({string.Join(", ", Sandbox.Audited.Audit.Events.EventCatalog.Terminal.Order(StringComparer.Ordinal).Select(t => $"'{t}'"))}))";

    [LoggerMessage(Level = LogLevel.Information, Message = "Run {RunId}: the terminal event of its moved row was not recorded by this pass (another writer, or the store)")]
    private partial void LogMovedRowConflict(Exception e, Guid runId);

    [LoggerMessage(Level = LogLevel.Critical, Message = "Not starting: {Reason}")]
    private partial void LogNodeIdInUse(string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Node id {Node} was held by a process that heartbeated within the last {Grace} s: "
        + "waiting to see whether it is alive (then this process stops) or crashed (then this process takes over once its heartbeat is older than the grace)")]
    private partial void LogWaitingForNodeId(string node, int grace);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Removing orphaned sandboxes at start-up failed")]
    private partial void LogStartupReapFailed(Exception e);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Run {RunId} was in flight when the service stopped; recorded RunAbandoned")]
    private partial void LogAbandoned(Guid runId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Run {RunId}: its queue row was {State} without a terminal event; recorded it")]
    private partial void LogMovedRowEnded(Guid runId, string state);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Count} runs ({Slots} slots held) did not finish within the shutdown grace period; stopping them")]
    private partial void LogGraceExceeded(int count, int slots);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Count} sandbox removals were still pending at shutdown; the reaper removes them at the next start")]
    private partial void LogRemovalsPending(int count);
}
