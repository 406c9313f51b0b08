using Marten;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Domain.Audit;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Audit.Trail;

/// <summary>
/// Records every read of the audit trail as AuditAccessed in the tenant's access-log stream of the day,
/// hash-chained like a run. Several nodes may append to the same stream: each append re-reads the tail and
/// retries when another writer got there first (optimistic concurrency on the stream version).
/// </summary>
public sealed class AccessLog(IDocumentStore store, TimeProvider clock)
{
    private readonly SemaphoreSlim _gate = new(1, 1);

    public async Task RecordAsync(Caller caller, string action, IReadOnlyDictionary<string, string> filter, long resultCount,
        string? clientAddress, string? correlationId, CancellationToken ct, int? refusedWith = null)
    {
        var at = clock.GetUtcNow();
        var streamId = AccessLogStreams.For(caller.Tenant, DateOnly.FromDateTime(at.UtcDateTime));
        var accessed = new AuditAccessed(streamId, caller, action, filter, resultCount, clientAddress, correlationId, at, refusedWith);

        // One writer per process; other nodes are handled by the shared-stream retry.
        await _gate.WaitAsync(ct);
        try
        {
            await RunStream.AppendSharedAsync(store, streamId, new WriteContext(caller.Subject, correlationId, Tenant: caller.Tenant), accessed, ct);
        }
        finally
        {
            _gate.Release();
        }
    }
}
