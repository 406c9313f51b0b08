using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Executor.Docker;
using Sandbox.Audited.Executor.Sandboxes;

namespace Sandbox.Audited.Executor.Pool;

/// <summary>Records on its run that a container was removed by the sweep or the reaper (the run is found by the container id).</summary>
public interface IRemovalLog
{
    Task RecordAsync(string containerId, string how, CancellationToken ct);
}

/// <summary>
/// Removes this node's containers that no live run or pool slot owns: everything at start-up (a crash
/// left them), then periodically. Containers younger than a minute are spared, since one may be
/// between "created" and "tracked".
/// </summary>
public sealed partial class Reaper(
    DockerEngine docker,
    SandboxRegistry registry,
    IRemovalLog removals,
    IOptions<ExecutorOptions> options,
    TimeProvider clock,
    ILogger<Reaper> logger) : BackgroundService
{
    /// <summary>
    /// Removes the orphans and returns the ids the engine confirmed gone. The periodic pass records each on its run at once;
    /// the start-up sweep leaves that to the caller, which records it after the run's abandonment.
    /// </summary>
    public async Task<IReadOnlyList<string>> ReapAsync(bool startup, CancellationToken ct)
    {
        var mine = $"{ContainerSpec.NodeLabel}={options.Value.NodeId}";
        var removed = new List<string>();
        foreach (var container in await docker.ListByLabelAsync(mine, ct))
        {
            if (!container.Labels.TryGetValue(ContainerSpec.ServiceLabel, out var service) || service != ContainerSpec.ServiceName)
                continue;
            if (registry.Owns(container.ID))
                continue;
            if (!startup && clock.GetUtcNow() - container.Created < TimeSpan.FromMinutes(1))
                continue;
            try
            {
                await docker.RemoveAsync(container.ID, ct);
            }
            catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
            {
                LogRemoveFailed(e, container.ID);
                continue;
            }
            removed.Add(container.ID);
            if (!startup)
                await removals.RecordAsync(container.ID, SandboxRemoval.Reaped, ct);
        }
        if (removed.Count > 0)
            LogReaped(removed.Count, options.Value.NodeId);
        return removed;
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // The start-up sweep runs before anything else (see the service's recovery); this loop only repeats it.
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(TimeSpan.FromSeconds(options.Value.ReapIntervalSeconds), stoppingToken);
                await ReapAsync(startup: false, stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception e)
            {
                LogReapFailed(e);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Reaped {Count} orphaned sandbox containers of node {Node}")]
    private partial void LogReaped(int count, string node);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Reaper could not remove {ContainerId}; next pass retries")]
    private partial void LogRemoveFailed(Exception e, string containerId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Reaping orphaned sandboxes failed")]
    private partial void LogReapFailed(Exception e);
}
