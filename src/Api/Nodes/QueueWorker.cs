using Microsoft.Extensions.Options;
using Sandbox.Audited.Api.Runs;
using Sandbox.Audited.Audit.Queue;
using Sandbox.Audited.Executor;

namespace Sandbox.Audited.Api.Nodes;

/// <summary>
/// The executor role's worker: whenever a run is queued (NOTIFY), a slot comes free, or the poll interval passes, it claims
/// queued runs (FOR UPDATE SKIP LOCKED, the tenant's cluster-wide ceiling checked in the same statement) for as long as it
/// has free slots, and runs each with the orchestrator's execution code.
/// </summary>
public sealed partial class QueueWorker(
    RunQueue queue,
    QueueSignals signals,
    Admission admission,
    RunOrchestrator orchestrator,
    IOptions<ExecutorOptions> executor,
    IOptions<QueueOptions> queueOptions,
    ILogger<QueueWorker> logger) : BackgroundService
{
    private static readonly TimeSpan Poll = TimeSpan.FromSeconds(1);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        admission.SlotFreed += signals.WakeWorker;
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
            admission.SlotFreed -= signals.WakeWorker;
        }
    }

    private async Task ClaimWhileFreeAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested && admission.TrySlot() is { } slot)
        {
            ClaimedRun? claimed;
            try
            {
                claimed = await queue.ClaimAsync(executor.Value.NodeId, admission.Options.MaxConcurrentRunsPerTenant, queueOptions.Value.LeaseSeconds, ct);
            }
            catch
            {
                slot.Dispose();
                throw;
            }
            if (claimed is null)
            {
                slot.Dispose();
                return;
            }
            LogClaimed(claimed.Work.RunId);
            _ = orchestrator.ExecuteClaimedAsync(claimed, slot).ContinueWith(t => _ = t.Exception, TaskScheduler.Default);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Claiming runs from the queue failed; retrying")]
    private partial void LogClaimFailed(Exception e);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Run {RunId}: claimed from the queue")]
    private partial void LogClaimed(Guid runId);
}
