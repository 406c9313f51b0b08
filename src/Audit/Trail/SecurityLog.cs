using Marten;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Domain.Audit;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Audit.Trail;

/// <summary>
/// The security stream of each tenant and day (minted tokens, refused authentication and authorization), hash-chained
/// and shared by nodes like the access log. Auditors read it with /v1/audit/events?type=token_minted|access_refused.
/// </summary>
public sealed class SecurityLog(IDocumentStore store, TimeProvider clock)
{
    private readonly SemaphoreSlim _gate = new(1, 1);

    public Task RecordMintAsync(Caller minted, DateTimeOffset expiresAt, string requestedBy, ClientInfo client, string? host, CancellationToken ct)
    {
        var at = clock.GetUtcNow();
        var streamId = SecurityLogStreams.For(minted.Tenant, DateOnly.FromDateTime(at.UtcDateTime));
        return AppendAsync(streamId, minted, client.CorrelationId,
            new TokenMinted(streamId, minted, expiresAt, requestedBy, client.Address, host, client.UserAgent, client.CorrelationId, at), ct);
    }

    public Task RecordRefusalsAsync(Caller owner, int status, string reason, string? clientAddress, string route,
        DateTimeOffset windowStart, int windowSeconds, long count, CancellationToken ct)
    {
        var at = clock.GetUtcNow();
        var streamId = SecurityLogStreams.For(owner.Tenant, DateOnly.FromDateTime(windowStart.UtcDateTime));
        return AppendAsync(streamId, owner, null,
            new AccessRefused(streamId, owner, status, reason, clientAddress, route, windowStart, windowSeconds, count, at), ct);
    }

    private async Task AppendAsync(Guid streamId, Caller caller, string? correlationId, object @event, CancellationToken ct)
    {
        await _gate.WaitAsync(ct);
        try
        {
            await RunStream.AppendSharedAsync(store, streamId, new WriteContext(caller.Subject, correlationId, Tenant: caller.Tenant), @event, ct);
        }
        finally
        {
            _gate.Release();
        }
    }
}
