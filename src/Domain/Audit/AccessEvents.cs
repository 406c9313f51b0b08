using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Domain.Audit;

/// <summary>
/// Someone read the audit trail (query, export or verify). One access-log stream per tenant and day
/// (<see cref="AccessLogStreams"/>), hash-chained like a run. Filter holds the request's parameters as given;
/// RefusedWith is the status of a read that was refused (bad parameters, another tenant), null when it was served.
/// </summary>
public sealed record AuditAccessed(
    Guid LogId,
    Caller Caller,
    string Action,
    IReadOnlyDictionary<string, string> Filter,
    long ResultCount,
    string? ClientAddress,
    string? CorrelationId,
    DateTimeOffset At,
    int? RefusedWith = null);

public static class AuditActions
{
    public const string QueryRuns = "query_runs";
    public const string QueryEvents = "query_events";
    public const string Export = "export";
    public const string Verify = "verify";
    public const string VerifyEvidence = "verify_evidence";
    public const string ReadEvidence = "read_evidence";
    public const string ListCheckpoints = "list_checkpoints";
    public const string VerifyCheckpoints = "verify_checkpoints";

    /// <summary>An auditor or admin read another person's run (its code and output) through /v1/runs/{id}.</summary>
    public const string ReadRun = "read_run";

    public const string ReadRunEvents = "read_run_events";

    /// <summary>An auditor or admin listed or downloaded another person's run artifacts.</summary>
    public const string ListArtifacts = "list_artifacts";
    public const string ReadArtifact = "read_artifact";

    public const string InclusionProof = "inclusion_proof";
    public const string ConsistencyProof = "consistency_proof";
}

public static class AccessLogStreams
{
    /// <summary>A deterministic stream id per tenant and UTC day: every node appends to the same stream.</summary>
    public static Guid For(string tenant, DateOnly day) =>
        NamedStreams.IdOf("sandbox-audited:access-log:" + tenant + ":" + day.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture));
}

public static class NamedStreams
{
    /// <summary>A stream id derived from a name (SHA-256, as a version 8 UUID): every node finds the same stream.</summary>
    public static Guid IdOf(string name)
    {
        var bytes = Convert.FromHexString(Hashing.Sha256Hex.Of(name)[..32]);
        bytes[6] = (byte)((bytes[6] & 0x0F) | 0x80); // version 8 (custom, RFC 9562)
        bytes[8] = (byte)((bytes[8] & 0x3F) | 0x80); // RFC 4122 variant
        return new Guid(bytes, bigEndian: true);
    }
}
