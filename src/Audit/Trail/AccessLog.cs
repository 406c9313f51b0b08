using Marten;
using Npgsql;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Domain.Audit;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Audit.Trail;

/// <summary>
/// Records every read of the audit trail as AuditAccessed in the tenant's access-log stream of the day,
/// hash-chained like a run. Several nodes may append to the same stream: each append re-reads the tail and
/// retries when another writer got there first (optimistic concurrency on the stream version).
/// </summary>
public sealed class AccessLog(IDocumentStore store, NpgsqlDataSource database, TimeProvider clock)
{
    private const int Attempts = 8;
    private readonly SemaphoreSlim _gate = new(1, 1);

    public async Task RecordAsync(Caller caller, string action, IReadOnlyDictionary<string, string> filter, long resultCount,
        string? clientAddress, string? correlationId, CancellationToken ct)
    {
        var at = clock.GetUtcNow();
        var streamId = AccessLogStreams.For(caller.Tenant, DateOnly.FromDateTime(at.UtcDateTime));
        var accessed = new AuditAccessed(streamId, caller, action, filter, resultCount, clientAddress, correlationId, at);
        var context = new WriteContext(caller.Subject, correlationId, Tenant: caller.Tenant);

        await _gate.WaitAsync(ct);
        try
        {
            for (var attempt = 1; ; attempt++)
            {
                var (version, lastHash) = await TailAsync(streamId, ct);
                try
                {
                    await RunStream.Continue(store, streamId, context, version, lastHash).AppendAsync(accessed, ct);
                    return;
                }
                catch (Exception) when (attempt < Attempts && !ct.IsCancellationRequested)
                {
                    // Another node appended to the same stream first; read the new tail and try again.
                    await Task.Delay(Random.Shared.Next(5, 20 * attempt), ct);
                }
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    private async Task<(long Version, string LastHash)> TailAsync(Guid streamId, CancellationToken ct)
    {
        await using var command = database.CreateCommand(
            "SELECT version, headers ->> 'hash' FROM sandbox.mt_events WHERE stream_id = $1 ORDER BY version DESC LIMIT 1");
        command.Parameters.AddWithValue(streamId);
        await using var reader = await command.ExecuteReaderAsync(ct);
        return await reader.ReadAsync(ct)
            ? (reader.GetInt64(0), reader.IsDBNull(1) ? EventChain.Genesis : reader.GetString(1))
            : (0, EventChain.Genesis);
    }
}
