using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Domain.Audit;

/// <summary>
/// A tree head over a tenant's whole record: the RFC 6962 Merkle root of every event of the tenant's streams up to
/// global sequence ToSequence (<see cref="Hashing.MerkleTree.EventLeaf"/>, in sequence order). A later deletion of any
/// event or whole run, or an insertion, changes the root. Kept in the tenant's checkpoint stream; an auditor who
/// keeps a copy of the head can check the record against it later without trusting the service. Signature: see the
/// service's checkpoint signer (null when no checkpoint key is configured). From the stored tree on, a head also
/// carries the consistency proof (RFC 9162 section 2.1.4, hex) from the tenant's previous checkpoint and the head as a
/// C2SP signed note (Ed25519); heads recorded before have neither.
/// </summary>
public sealed record CheckpointRecorded(
    Guid LogId,
    Caller Caller,
    long ToSequence,
    long TreeSize,
    string RootHash,
    string? KeyId,
    string? Signature,
    DateTimeOffset At,
    long? PreviousTreeSize = null,
    IReadOnlyList<string>? ConsistencyProof = null,
    string? Note = null);

public static class CheckpointStreams
{
    /// <summary>One deterministic stream per tenant, so every node appends its checkpoints to the same chain.</summary>
    public static Guid For(string tenant) => NamedStreams.IdOf("sandbox-audited:checkpoints:" + tenant);
}
