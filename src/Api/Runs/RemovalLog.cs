using Marten;
using Npgsql;
using Sandbox.Audited.Audit;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Executor.Pool;

namespace Sandbox.Audited.Api.Runs;

/// <summary>
/// Records a sweep's or the reaper's removal on the run the container served, found through its SandboxCreated (a pooled
/// container's label names no run), or else through its run label: the engine may have created a container whose id the
/// service never got (the connection broke during create), and the run's record must still name it. Containers that
/// never served a run (pool leftovers) have no stream to record on.
/// </summary>
public sealed partial class RunRemovalLog(IDocumentStore store, NpgsqlDataSource dataSource, TimeProvider clock, ILogger<RunRemovalLog> logger) : IRemovalLog
{
    public async Task RecordAsync(string containerId, string? runLabel, string how, CancellationToken ct)
    {
        try
        {
            var sql = $"""
                SELECT c.stream_id FROM {MartenSetup.Schema}.mt_events c
                WHERE c.type = 'sandbox_created' AND c.data ->> 'containerId' = $1
                  AND NOT EXISTS (SELECT 1 FROM {MartenSetup.Schema}.mt_events r
                                  WHERE r.stream_id = c.stream_id AND r.type = 'sandbox_removed' AND r.data ->> 'containerId' = $1)
                LIMIT 1
                """;
            await using var command = dataSource.CreateCommand(sql);
            command.Parameters.AddWithValue(containerId);
            if (await command.ExecuteScalarAsync(ct) is not Guid runId)
            {
                if (!Guid.TryParse(runLabel, out runId) || !await IsRunWithoutRemovalAsync(runId, containerId, ct))
                    return;
            }
            var stream = await RunStream.ResumeAsync(store, runId, new WriteContext("system:reaper", null), ct);
            await stream.AppendAsync(RunDecisions.Removed(runId, containerId, how, clock.GetUtcNow()), ct);
        }
        catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            LogNotRecorded(e, containerId);
        }
    }

    private async Task<bool> IsRunWithoutRemovalAsync(Guid runId, string containerId, CancellationToken ct)
    {
        await using var command = dataSource.CreateCommand($"""
            SELECT EXISTS (SELECT 1 FROM {MartenSetup.Schema}.mt_events WHERE stream_id = $1 AND type = 'run_requested')
               AND NOT EXISTS (SELECT 1 FROM {MartenSetup.Schema}.mt_events
                               WHERE stream_id = $1 AND type = 'sandbox_removed' AND data ->> 'containerId' = $2)
            """);
        command.Parameters.AddWithValue(runId);
        command.Parameters.AddWithValue(containerId);
        return await command.ExecuteScalarAsync(ct) is true;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "The removal of sandbox {ContainerId} could not be recorded on its run")]
    private partial void LogNotRecorded(Exception e, string containerId);
}
