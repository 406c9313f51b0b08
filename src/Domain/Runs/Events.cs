namespace Sandbox.Audited.Domain.Runs;

// One stream per run (stream id = run id). Every event carries the run id first and the time it
// happened last; the hash chain (Audit) covers all of it.

public sealed record Caller(string Subject, string Tenant, IReadOnlyList<string> Roles)
{
    public bool Has(string role) => Roles.Contains(role);
}

/// <summary>
/// Where a request came from. CorrelationId is the server's own id for the request; ClientTraceparent is what the
/// client sent as W3C `traceparent`, kept apart so that a client cannot borrow another caller's correlation id.
/// </summary>
public sealed record ClientInfo(string? Address, string? UserAgent, string? IdempotencyKey, string? CorrelationId, string? ClientTraceparent = null);

public sealed record FileDigest(string Name, long Bytes, string Sha256);

/// <summary>
/// The request as recorded before anything runs. Since the evidence store (InputsStored = true), Code is null and code,
/// stdin and each file live in the tenant's evidence store under CodeSha256, StdinSha256 and Files[].Sha256; runs recorded
/// before keep their code in Code. ReproducesRunId links a reproduction to the run it repeats.
/// </summary>
public sealed record RunRequested(
    Guid RunId,
    Caller Caller,
    string Language,
    string? Code,
    string CodeSha256,
    long CodeBytes,
    string StdinSha256,
    long StdinBytes,
    IReadOnlyList<string> Args,
    IReadOnlyList<FileDigest> Files,
    RequestedLimits Limits,
    string Classification,
    ClientInfo Client,
    string Node,
    DateTimeOffset At,
    string? Runtime = null,
    string? Isolation = null,
    bool InputsStored = false,
    Guid? ReproducesRunId = null);

public sealed record RequestRejected(
    Guid RunId,
    Caller Caller,
    int HttpStatus,
    IReadOnlyList<string> Errors,
    string? Language,
    string? CodeSha256,
    ClientInfo Client,
    DateTimeOffset At);

public sealed record PolicyEvaluated(
    Guid RunId,
    string Decision,
    string BundleDigest,
    IReadOnlyList<string> RuleIds,
    RunLimits Limits,
    IReadOnlyList<string> Findings,
    IReadOnlyList<string> Reasons,
    DateTimeOffset At,
    string? Runtime = null,
    string? Isolation = null);

/// <summary>
/// The run entered the run queue with its write-ahead events. ClaimedBy names the node that took it at once (an api node
/// that is also an executor and had a free slot); null when it waits for any executor to claim it.
/// </summary>
public sealed record RunQueued(Guid RunId, string QueuedBy, string? ClaimedBy, DateTimeOffset At);

public sealed record SandboxCreated(
    Guid RunId,
    string ContainerId,
    string Image,
    string ImageId,
    string Node,
    bool FromPool,
    DateTimeOffset CreatedAt,
    SandboxSettings Settings,
    DateTimeOffset At,
    string? RuntimeId = null,
    string? Isolation = null,
    string? LayerDigest = null,
    string? SbomDigest = null);

public sealed record SandboxStarted(Guid RunId, string ContainerId, DateTimeOffset At);

public sealed record SandboxExited(
    Guid RunId,
    int? ExitCode,
    int? Signal,
    bool TimedOut,
    bool OomKilled,
    bool PidsLimitHit,
    long WallUs,
    long CpuUserUs,
    long CpuSysUs,
    long? PeakMemoryKb,
    DateTimeOffset At);

public sealed record OutputRecorded(Guid RunId, StreamOutput Stdout, StreamOutput Stderr, DateTimeOffset At);

/// <summary>
/// The engine no longer has the container. How says who established that: "removed" (the engine confirmed the removal),
/// "already_gone" (the engine answered that no such container exists), "swept_at_startup" (a restarted service removed
/// what its previous process left), "reaped" (the periodic reaper removed an orphan). Recorded only after the engine answered.
/// </summary>
public sealed record SandboxRemoved(Guid RunId, string ContainerId, string How, DateTimeOffset At);

public static class SandboxRemoval
{
    public const string Removed = "removed";
    public const string AlreadyGone = "already_gone";
    public const string SweptAtStartup = "swept_at_startup";
    public const string Reaped = "reaped";
}

// Terminal events: exactly one per run.
public sealed record RunCompleted(Guid RunId, string Status, int? ExitCode, long DurationMs, string? Reason, DateTimeOffset At);

public sealed record RunFailed(Guid RunId, string Reason, DateTimeOffset At);

public sealed record RunAbandoned(Guid RunId, string Reason, string Node, DateTimeOffset At);

/// <summary>
/// Not terminal: the true outcome an executor journaled arrived after the run had been recorded abandoned (its node was
/// silent beyond the grace). Terminal names the event the node had meant to record, with its status, exit code, reason
/// and time; the run keeps its one terminal event, RunAbandoned, and nothing true is lost.
/// </summary>
public sealed record LateOutcomeRecorded(Guid RunId, string Node, string Terminal, string? Status, int? ExitCode, string? Reason, DateTimeOffset OriginalAt, DateTimeOffset At);

/// <summary>
/// What came out of one stream: hash and sizes of the exact bytes kept, and their content. When Stored, the bytes live in
/// the tenant's evidence store under Sha256 and the event holds none of them (Encoding "stored", Content empty), so that an
/// erasure of the stored content leaves nothing of it in the record; events recorded by earlier versions hold a preview of
/// the first PreviewBytes bytes there instead. Otherwise (runs recorded before the store, or an outcome journaled while
/// the store was away) Content is all of it, utf8 or base64.
/// </summary>
public sealed record StreamOutput(string Sha256, long Bytes, long ProducedBytes, bool Truncated, string Encoding, string Content, bool Stored = false)
{
    /// <summary>The preview length of stored outputs recorded by earlier versions (their events are kept as recorded).</summary>
    public const int PreviewBytes = 1024;

    public const string StoredEncoding = "stored";

    /// <summary>A stream kept in the evidence store: named by digest and size only.</summary>
    public static StreamOutput InStore(string sha256, long bytes, long producedBytes, bool truncated) =>
        new(sha256, bytes, producedBytes, truncated, StoredEncoding, "", Stored: true);
}

/// <summary>
/// Content was erased from the tenant's evidence store (retention per classification, or a data-subject request): who
/// (Caller.Subject, role "eraser"), why, and which digests. Recorded on the tenant's evidence stream
/// (EvidenceStreams.For); the digests stay in the events that referenced them, so the chain still verifies.
/// </summary>
public sealed record EvidenceErased(Guid StreamId, Caller Caller, IReadOnlyList<string> Sha256s, string Reason, string? Classification, DateTimeOffset At);

/// <summary>
/// The evidence sweep removed contents no event names (their run's commit failed for good): which, their sizes, and why
/// each could go; recorded on the tenant's evidence stream in the same transaction as the removal. Caller is the sweep
/// (role "system"), Node the node that ran it.
/// </summary>
public sealed record EvidenceSwept(Guid StreamId, Caller Caller, string Node, IReadOnlyList<SweptContent> Contents, long GraceSeconds, DateTimeOffset At);

/// <summary>One content the sweep removed: digest, size, and the decision's reason.</summary>
public sealed record SweptContent(string Sha256, long? Bytes, string Reason);

public static class EvidenceStreams
{
    /// <summary>One deterministic stream per tenant for its erasure and sweep events: every eraser appends to the same one.</summary>
    public static Guid For(string tenant) => Audit.NamedStreams.IdOf("sandbox-audited:evidence:" + tenant);
}

/// <summary>The security settings and limits a container was actually created with.</summary>
public sealed record SandboxSettings(
    string Runtime,
    string NetworkMode,
    bool ReadOnlyRootfs,
    string User,
    IReadOnlyList<string> CapDrop,
    IReadOnlyList<string> SecurityOpt,
    string Tmpfs,
    long MemoryBytes,
    long MemorySwapBytes,
    long NanoCpus,
    long PidsLimit,
    IReadOnlyList<string> Ulimits,
    bool Init,
    IReadOnlyDictionary<string, string> Labels);
