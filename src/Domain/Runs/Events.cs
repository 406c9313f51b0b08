namespace Sandbox.Audited.Domain.Runs;

// One stream per run (stream id = run id). Every event carries the run id first and the time it
// happened last; the hash chain (Audit) covers all of it.

public sealed record Caller(string Subject, string Tenant, IReadOnlyList<string> Roles);

public sealed record ClientInfo(string? Address, string? UserAgent, string? IdempotencyKey, string? CorrelationId);

public sealed record FileDigest(string Name, long Bytes, string Sha256);

public sealed record RunRequested(
    Guid RunId,
    Caller Caller,
    string Language,
    string Code,
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
    string? Isolation = null);

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

public sealed record RunQueued(Guid RunId, int QueuePosition, DateTimeOffset At);

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

public sealed record SandboxRemoved(Guid RunId, string ContainerId, DateTimeOffset At);

// Terminal events: exactly one per run.
public sealed record RunCompleted(Guid RunId, string Status, int? ExitCode, long DurationMs, string? Reason, DateTimeOffset At);

public sealed record RunFailed(Guid RunId, string Reason, DateTimeOffset At);

public sealed record RunAbandoned(Guid RunId, string Reason, string Node, DateTimeOffset At);

/// <summary>What came out of one stream: hash and sizes of the exact bytes, and the (capped) content.</summary>
public sealed record StreamOutput(string Sha256, long Bytes, long ProducedBytes, bool Truncated, string Encoding, string Content);

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
