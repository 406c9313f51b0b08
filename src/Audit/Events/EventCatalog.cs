using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Audit.Events;

/// <summary>Every event type the store knows, with the stable name recorded in mt_events.type and hashed.</summary>
public static class EventCatalog
{
    public static readonly IReadOnlyDictionary<Type, string> Names = new Dictionary<Type, string>
    {
        [typeof(RunRequested)] = "run_requested",
        [typeof(RequestRejected)] = "request_rejected",
        [typeof(PolicyEvaluated)] = "policy_evaluated",
        [typeof(RunQueued)] = "run_queued",
        [typeof(SandboxCreated)] = "sandbox_created",
        [typeof(SandboxStarted)] = "sandbox_started",
        [typeof(SandboxExited)] = "sandbox_exited",
        [typeof(OutputRecorded)] = "output_recorded",
        [typeof(ArtifactRecorded)] = "artifact_recorded",
        [typeof(SandboxRemoved)] = "sandbox_removed",
        [typeof(RunCompleted)] = "run_completed",
        [typeof(RunFailed)] = "run_failed",
        [typeof(RunAbandoned)] = "run_abandoned",
        [typeof(LateOutcomeRecorded)] = "late_outcome_recorded",
        [typeof(EvidenceErased)] = "evidence_erased",
        [typeof(EvidenceSwept)] = "evidence_swept",
        [typeof(PolicyBundleActivated)] = "policy_bundle_activated",
        [typeof(PolicyBundleRejected)] = "policy_bundle_rejected",
        [typeof(Sandbox.Audited.Domain.Audit.AuditAccessed)] = "audit_accessed",
        [typeof(CallbackAttempted)] = "callback_attempted",
        [typeof(Sandbox.Audited.Domain.Audit.CheckpointRecorded)] = "checkpoint_recorded",
        [typeof(Sandbox.Audited.Domain.Audit.TokenMinted)] = "token_minted",
        [typeof(Sandbox.Audited.Domain.Audit.AccessRefused)] = "access_refused",
        [typeof(Sandbox.Audited.Domain.Runtimes.RuntimeImageRecorded)] = "runtime_image_recorded",
    };

    public static readonly IReadOnlySet<string> Terminal = new HashSet<string> { "run_completed", "run_failed", "run_abandoned" };

    public static string NameOf(object data) =>
        Names.TryGetValue(data.GetType(), out var name)
            ? name
            : throw new InvalidOperationException($"{data.GetType().Name} is not a registered event type.");
}
