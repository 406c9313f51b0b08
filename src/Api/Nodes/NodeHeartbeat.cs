using Marten;
using Microsoft.Extensions.Options;
using Sandbox.Audited.Api.Runs;
using Sandbox.Audited.Audit.Queue;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Executor;

namespace Sandbox.Audited.Api.Nodes;

/// <summary>
/// Every Queue:HeartbeatSeconds: records that this node is alive and extends the leases of the runs it holds, then sweeps
/// the cluster for runs whose executor went silent (lease expired AND no heartbeat for Queue:AbandonGraceSeconds). Each
/// such run gets one RunAbandoned naming the node, committed with its row's move to 'abandoned'; two sweepers racing
/// meet on the stream's expected version, so only one records it. Any node may sweep. Each tick also ends this node's own
/// rows moved to refused or abandoned whose terminal event never committed (RunLifecycle.EndMovedRowsAsync).
/// </summary>
public sealed partial class NodeHeartbeat(
    RunQueue queue,
    IDocumentStore store,
    IOptions<NodeOptions> node,
    IOptions<QueueOptions> options,
    IOptions<ExecutorOptions> executor,
    TimeProvider clock,
    RunOrchestrator runs,
    OutcomeJournal journal,
    RunLifecycle lifecycle,
    IHostApplicationLifetime lifetime,
    ILogger<NodeHeartbeat> logger) : BackgroundService
{
    // Sweeping starts only after this node has heartbeated without a break for the grace: after a PostgreSQL outage every
    // node's heartbeat is stale, and the first node back must not abandon the runs of nodes that are merely not back yet.
    private DateTimeOffset? _beatingSince;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // The node id was taken for this process at start-up (RunLifecycle), before anything of the node's was reaped.
        var nodeId = executor.Value.NodeId;
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(Math.Max(1, options.Value.HeartbeatSeconds)), clock);
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await timer.WaitForNextTickAsync(stoppingToken);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            try
            {
                await queue.HeartbeatAsync(nodeId, node.Value.Roles, options.Value.LeaseSeconds, [.. runs.InFlightRunIds, .. journal.HeldRunIds()], stoppingToken,
                    journal.SetAsideRunIds());
                _beatingSince ??= clock.GetUtcNow();
                if (clock.GetUtcNow() - _beatingSince >= TimeSpan.FromSeconds(options.Value.AbandonGraceSeconds))
                    await SweepAsync(stoppingToken);
            }
            catch (NodeIdLostException e)
            {
                LogNodeIdLost(e.Message);
                Environment.ExitCode = Hosting.ExitCodes.NodeIdLost;
                lifetime.StopApplication();
                return; // the id is another process's now: no release
            }
            catch (Exception e) when (!stoppingToken.IsCancellationRequested)
            {
                _beatingSince = null;
                LogHeartbeatFailed(e);
                continue;
            }
            // Apart from the heartbeat: its failure must neither hold back the next beat nor pause the sweeping.
            try
            {
                await lifecycle.EndMovedRowsAsync(stoppingToken);
            }
            catch (Exception e) when (!stoppingToken.IsCancellationRequested)
            {
                LogMovedRowsFailed(e);
            }
        }
        // Stopped after the runs drained (the host stops this after RunLifecycle's StoppingAsync): no beat follows the release.
        try
        {
            using var release = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await queue.ReleaseAsync(nodeId, release.Token);
        }
        catch (Exception e)
        {
            LogReleaseFailed(e);
        }
    }

    [LoggerMessage(Level = LogLevel.Critical, Message = "{Reason}")]
    private partial void LogNodeIdLost(string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Releasing the node id at shutdown failed; the next process of this node waits for Queue:AbandonGraceSeconds")]
    private partial void LogReleaseFailed(Exception e);

    /// <summary>Records RunAbandoned for every run whose executor went silent; returns how many this pass recorded.</summary>
    public async Task<int> SweepAsync(CancellationToken ct)
    {
        var recorded = 0;
        foreach (var silent in await queue.SilentClaimsAsync(options.Value.AbandonGraceSeconds, ct))
        {
            try
            {
                if (await RunStream.ResumeUnlessEndedAsync(store, silent.RunId, new WriteContext("system:sweeper", null, Tenant: silent.Tenant), ct) is not { } stream)
                    continue; // ended while we looked; its own commit ends the row
                await stream.AppendAsync(RunDecisions.AbandonSilentNode(silent.RunId, silent.Node, silent.LastHeartbeat, options.Value.AbandonGraceSeconds, clock.GetUtcNow()), ct,
                    session => queue.MarkAbandoned(session, silent.RunId, silent.Node));
                LogAbandoned(silent.RunId, silent.Node);
                recorded++;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                LogSweepConflict(e, silent.RunId); // another sweeper, or the executor itself, recorded first
            }
        }
        return recorded;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Heartbeat or sweep of the run queue failed; retrying at the next tick")]
    private partial void LogHeartbeatFailed(Exception e);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Ending this node's moved queue rows failed; retrying at the next tick")]
    private partial void LogMovedRowsFailed(Exception e);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Run {RunId}: executor node {Node} went silent; recorded RunAbandoned")]
    private partial void LogAbandoned(Guid runId, string node);

    [LoggerMessage(Level = LogLevel.Information, Message = "Run {RunId}: not recorded abandoned by this sweeper")]
    private partial void LogSweepConflict(Exception e, Guid runId);
}
