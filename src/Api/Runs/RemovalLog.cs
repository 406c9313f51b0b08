using Marten;
using Npgsql;
using Sandbox.Audited.Audit;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Executor.Pool;

namespace Sandbox.Audited.Api.Runs;

/// <summary>
/// Records a sweep's or the reaper's removal on the run the container served, found through its SandboxCreated (a pooled
/// container's label names no run). Containers that never served a run (pool leftovers) have no stream to record on.
/// </summary>
public sealed partial class RunRemovalLog(IDocumentStore store, NpgsqlDataSource dataSource, TimeProvider clock, ILogger<RunRemovalLog> logger) : IRemovalLog
{
    public async Task RecordAsync(string containerId, string how, CancellationToken ct)
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
                return;
            var stream = await RunStream.ResumeAsync(store, runId, new WriteContext("system:reaper", null), ct);
            await stream.AppendAsync(new SandboxRemoved(runId, containerId, how, clock.GetUtcNow()), ct);
        }
        catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            LogNotRecorded(e, containerId);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "The removal of sandbox {ContainerId} could not be recorded on its run")]
    private partial void LogNotRecorded(Exception e, string containerId);
}
