using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Executor.Sandboxes;

namespace Sandbox.Audited.Api.Runs;

/// <summary>
/// Moves a run's collected artifacts from the spool into the evidence store (per tenant, content-addressed) and returns
/// their ArtifactRecorded events, which the orchestrator commits before the terminal event. The spool file (hashed while
/// the sandbox sent it) is the only copy on the way: the store reads it once and checks it against that digest.
/// </summary>
public sealed partial class RunArtifacts(EvidenceStore evidence, TimeProvider clock, ILogger<RunArtifacts> logger)
{
    public async Task<IReadOnlyList<ArtifactRecorded>> StoreAsync(string tenant, Guid runId, string node, IReadOnlyList<CollectedArtifact> collected, CancellationToken ct)
    {
        var events = new List<ArtifactRecorded>(collected.Count);
        foreach (var a in collected)
        {
            if (a.Path is not { } path)
            {
                events.Add(RunDecisions.ArtifactNotSent(runId, a.Name, a.Bytes, a.Sha256, a.Skipped, clock.GetUtcNow()));
                continue;
            }
            try
            {
                await using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 81920,
                    FileOptions.Asynchronous | FileOptions.SequentialScan);
                var stored = await evidence.PutAsync(tenant, new StoredContent(a.Sha256!, a.Bytes), file, new ContentHold(runId, node), ct);
                events.Add(RunDecisions.ArtifactStored(runId, a.Name, stored.Bytes, stored.Sha256, clock.GetUtcNow()));
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // The digest is known even when the store is not reachable: recorded, marked as not kept.
                LogNotStored(e, runId, a.Name);
                events.Add(RunDecisions.ArtifactNotStored(runId, a.Name, a.Bytes, a.Sha256, clock.GetUtcNow()));
            }
        }
        return events;
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Run {RunId}: artifact {Name} could not be stored")]
    private partial void LogNotStored(Exception e, Guid runId, string name);
}
