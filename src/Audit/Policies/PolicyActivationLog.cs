using Marten;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Domain.Policies;

namespace Sandbox.Audited.Audit.Policies;

/// <summary>
/// Writes bundle activations and refusals to the shared, hash-chained policy activations stream. Several nodes
/// append to it; when another node got there first (optimistic concurrency), resume the chain and retry.
/// </summary>
public sealed class PolicyActivationLog(IDocumentStore store, PolicyBundleStore bundles)
{
    private static readonly WriteContext Context = new("system:policies", null);

    private readonly SemaphoreSlim _gate = new(1, 1);

    /// <summary>Stores the bundle's content first, so every digest an event names can be read back.</summary>
    public async Task RecordActivationAsync(PolicyBundle bundle, string? previousDigest, string trigger, string node, DateTimeOffset at, CancellationToken ct)
    {
        await bundles.SaveAsync(bundle, ct);
        var files = bundle.Files.Select(f => new PolicyFileDigest(f.Path, f.Sha256)).ToList();
        await AppendAsync(new PolicyBundleActivated(PolicyActivations.StreamId, bundle.Digest, files, previousDigest, trigger, node, at), ct);
    }

    public Task RecordRejectionAsync(IReadOnlyList<PolicyError> errors, string? activeDigest, string trigger, string node, DateTimeOffset at, CancellationToken ct) =>
        AppendAsync(new PolicyBundleRejected(PolicyActivations.StreamId, errors, activeDigest, trigger, node, at), ct);

    private async Task AppendAsync(object @event, CancellationToken ct)
    {
        await _gate.WaitAsync(ct);
        try
        {
            await RunStream.AppendSharedAsync(store, PolicyActivations.StreamId, Context, @event, ct);
        }
        finally
        {
            _gate.Release();
        }
    }
}
