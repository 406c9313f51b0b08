namespace Sandbox.Audited.Domain.Policies;

// Policy bundle loads, on one hash-chained stream shared by every node (stream id = PolicyActivations.StreamId).
// Trigger says who or what caused the load: "startup", "file-change" or "admin:<sub>".

public static class PolicyActivations
{
    /// <summary>The well-known stream every node appends its bundle activations and refusals to.</summary>
    public static readonly Guid StreamId = new("5b0c7a1e-9d3f-4c2b-8e61-000000000001");

    public const string Startup = "startup";
    public const string FileChange = "file-change";

    public static string Admin(string subject) => "admin:" + subject;
}

/// <summary>One file of a bundle as recorded: its path in the bundle and the SHA-256 of its content.</summary>
public sealed record PolicyFileDigest(string Path, string Sha256);

/// <summary>A node started deciding runs with this bundle; its content is stored once by digest (sandbox.policy_bundles).</summary>
public sealed record PolicyBundleActivated(
    Guid StreamId,
    string Digest,
    IReadOnlyList<PolicyFileDigest> Files,
    string? PreviousDigest,
    string Trigger,
    string Node,
    DateTimeOffset At);

/// <summary>A node refused an invalid bundle; ActiveDigest is the bundle that stayed active (null if none was).</summary>
public sealed record PolicyBundleRejected(
    Guid StreamId,
    IReadOnlyList<PolicyError> Errors,
    string? ActiveDigest,
    string Trigger,
    string Node,
    DateTimeOffset At);
