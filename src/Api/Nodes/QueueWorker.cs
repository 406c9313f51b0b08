using Microsoft.Extensions.Options;
using Sandbox.Audited.Api.Runs;
using Sandbox.Audited.Audit.Queue;
using Sandbox.Audited.Executor;

namespace Sandbox.Audited.Api.Nodes;

/// <summary>
/// The executor role's worker: whenever a run is queued (NOTIFY), a slot comes free, or the poll interval passes, it claims
/// as many queued runs as it has free slots in one call (FOR UPDATE SKIP LOCKED, the tenant's cluster-wide ceiling checked in
/// the same statement), and runs each with the orchestrator's execution code.
/// </summary>
public sealed partial class QueueWorker(
    RunQueue queue,
    QueueSignals signals,
    Admission admission,
    RunOrchestrator orchestrator,
    IOptions<ExecutorOptions> executor,
    IOptions<QueueOptions> queueOptions,
    IOptions<NodeOptions> node,
    ILogger<QueueWorker> logger) : BackgroundService
{
    private static readonly TimeSpan Poll = TimeSpan.FromSeconds(1);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        admission.SlotFreed += signals.SlotFreed;
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                await signals.WaitForWorkAsync(Poll, stoppingToken);
                try
                {
                    await ClaimWhileFreeAsync(stoppingToken);
                }
                catch (Exception e) when (!stoppingToken.IsCancellationRequested)
                {
                    LogClaimFailed(e);
                }
            }
        }
        finally
        {
            admission.SlotFreed -= signals.SlotFreed;
        }
    }

    private async Task ClaimWhileFreeAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            // Every free slot at once: one round trip claims as many runs as this node can start.
            var slots = new List<Admission.Slot>();
            while (admission.TrySlot() is { } slot)
                slots.Add(slot);
            if (slots.Count == 0)
                return;
            // A node that also takes requests keeps one slot for them while the claim is in flight, as one claim at a time did.
            if (node.Value.Api && slots.Count > 1)
            {
                slots[^1].Return();
                slots.RemoveAt(slots.Count - 1);
            }
            QueueClaim claim;
            var mark = signals.Pacing.Mark();
            try
            {
                // Not cancelled by shutdown: runs the database claimed must reach this node, or they would wait out their
                // lease and be abandoned. Shutdown waits for the slots this claim holds.
                claim = await queue.ClaimReportingAsync(executor.Value.NodeId, admission.Options.MaxConcurrentRunsPerTenant, queueOptions.Value.LeaseSeconds, slots.Count,
                    CancellationToken.None);
            }
            catch
            {
                slots.ForEach(s => s.Return());
                throw;
            }
            var claimed = claim.Runs;
            signals.Pacing.Claimed(mark, slots.Count, claimed.Count, claim.LeftBehind);
            for (var i = 0; i < slots.Count; i++)
            {
                if (i >= claimed.Count)
                {
                    slots[i].Return();
                    continue;
                }
                LogClaimed(claimed[i].Work.RunId);
                _ = orchestrator.ExecuteClaimedAsync(claimed[i], slots[i]).ContinueWith(t => _ = t.Exception, TaskScheduler.Default);
            }
            // Fewer runs than slots: the queue has nothing more this node may take now; a NOTIFY or the poll wakes it, and a freed
            // slot too if the claim looked past runs (a tenant at its ceiling).
            if (claimed.Count < slots.Count)
                return;
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Claiming runs from the queue failed; retrying")]
    private partial void LogClaimFailed(Exception e);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Run {RunId}: claimed from the queue")]
    private partial void LogClaimed(Guid runId);
}
