using System.Text;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Policies;

namespace Sandbox.Audited.Domain.Runs;

/// <summary>What the in-container supervisor reported when the program ended (or what the engine saw when it could not).</summary>
/// <summary>A queue row moved to refused or abandoned, as its row tells it: who recorded the run, who held it, how long it waited.</summary>
public sealed record MovedRow(string State, string? RequestedBy, string? ClaimedBy, long WaitedMs, DateTimeOffset MovedAt);

public sealed record ExitReport(
    int? ExitCode,
    int? Signal,
    bool TimedOut,
    bool OomKilled,
    bool PidsLimitHit,
    long StdoutProduced,
    long StderrProduced,
    bool StdoutTruncated,
    bool StderrTruncated,
    long WallUs,
    long CpuUserUs,
    long CpuSysUs,
    long? MaxRssKb);

/// <summary>The container that serves (or was created to serve) a run, as the executor made it.</summary>
public sealed record SandboxFacts(
    string ContainerId,
    string Image,
    string ImageId,
    bool FromPool,
    DateTimeOffset CreatedAt,
    SandboxSettings Settings,
    string? RuntimeId = null,
    string? Isolation = null,
    string? LayerDigest = null,
    string? SbomDigest = null);

/// <summary>
/// Every decision about one run, as pure functions: the facts and the time in, the events to append out, in order. The
/// API and the executor load, call and append; nothing here reads a clock, a database or the engine. Each path that ends
/// a run returns exactly one terminal event (RunCompleted, RunFailed or RunAbandoned).
/// </summary>
public static class RunDecisions
{
    /// <summary>
    /// A request refused before any decision (validation, authorization, idempotency): the refusal and its terminal event.
    /// What the client sent is recorded as ClientText echoes it (short, no control characters): a refusal is always recordable.
    /// </summary>
    public static object[] Reject(Guid runId, Caller caller, ClientInfo client, int httpStatus, IReadOnlyList<string> errors,
        string? language, string? code, DateTimeOffset now)
    {
        var cleaned = errors.Select(e => ClientText.Clean(e, ClientText.MaxError)).ToList();
        IReadOnlyList<string> recorded = cleaned.SequenceEqual(errors) ? errors : cleaned;
        return
        [
            new RequestRejected(runId, caller, httpStatus, recorded, language is null ? null : ClientText.Echo(language), code is null ? null : Sha256Hex.Of(code), client, now),
            new RunCompleted(runId, RunStatus.Rejected, null, 0, string.Join(" ", recorded), now),
        ];
    }

    /// <summary>
    /// The request (by the digests of its stored inputs) and the policy's decision, committed together before anything runs;
    /// a denied run ends here with its terminal event.
    /// </summary>
    public static object[] Request(Guid runId, Caller caller, ClientInfo client, ValidRunRequest request, IReadOnlyList<FileDigest> files,
        PolicyDecision decision, string node, long elapsedMs, DateTimeOffset now, Guid? reproduces = null)
    {
        var requested = new RunRequested(runId, caller, request.Language, null, Sha256Hex.Of(request.Code), Encoding.UTF8.GetByteCount(request.Code),
            Sha256Hex.Of(request.Stdin), request.Stdin.Length, request.Args, files, request.Limits, request.Classification, client, node, now,
            request.Runtime, request.Isolation, InputsStored: true, ReproducesRunId: reproduces);
        var evaluated = new PolicyEvaluated(runId, decision.Decision, decision.BundleDigest, decision.RuleIds, decision.Limits, decision.Findings,
            decision.Reasons, now, decision.Runtime, decision.Isolation);
        return decision.Allowed
            ? [requested, evaluated]
            : [requested, evaluated, new RunCompleted(runId, RunStatus.Denied, null, elapsedMs, string.Join(" ", decision.Reasons), now)];
    }

    /// <summary>Admission said no (no slot, queue full, shutting down): the run ends refused, nothing was created.</summary>
    public static object[] Refuse(Guid runId, string reason, long elapsedMs, DateTimeOffset now) =>
        [new RunCompleted(runId, RunStatus.Refused, null, elapsedMs, reason, now)];

    /// <summary>No sandbox could be had and the engine created none for this run.</summary>
    public static object[] NoSandbox(Guid runId, string error, DateTimeOffset now) =>
        [new RunFailed(runId, "No sandbox could be created: " + error, now)];

    /// <summary>
    /// The engine created a container for this run but it never became ready: the container is named in the record, then the
    /// failure, then its removal when the engine confirmed it (removal null: not confirmed, the reaper records it later).
    /// </summary>
    public static object[] SandboxNotReady(Guid runId, string node, SandboxFacts created, string error, string? removal, DateTimeOffset now)
    {
        var events = new List<object> { Created(runId, node, created, now), new RunFailed(runId, error, now) };
        if (removal is not null)
            events.Add(new SandboxRemoved(runId, created.ContainerId, removal, now));
        return [.. events];
    }

    /// <summary>Which sandbox serves the run and when the program was handed to it.</summary>
    public static object[] SandboxStarted(Guid runId, string node, SandboxFacts sandbox, DateTimeOffset startedAt, DateTimeOffset now) =>
        [Created(runId, node, sandbox, now), new SandboxStarted(runId, sandbox.ContainerId, startedAt)];

    /// <summary>
    /// The program ended: how it exited, what it wrote (already described by digest), what it left as artifacts, and the one
    /// status that explains it (the limit that bit wins over the exit code, see RunStatus.FromExit).
    /// </summary>
    /// <remarks>
    /// outputUnstored: why an output could not be kept, when the evidence store refused it for another reason than being away
    /// (which the journal waits out): the output is named by digest and size, and the run ends failed saying so.
    /// </remarks>
    public static object[] Outcome(Guid runId, ExitReport exit, bool outputTruncated, StreamOutput stdout, StreamOutput stderr,
        IReadOnlyList<ArtifactRecorded> artifacts, string? problem, long elapsedMs, DateTimeOffset now, string? outputUnstored = null)
    {
        var exited = new SandboxExited(runId, exit.ExitCode, exit.Signal, exit.TimedOut, exit.OomKilled, exit.PidsLimitHit, exit.WallUs,
            exit.CpuUserUs, exit.CpuSysUs, exit.MaxRssKb, now);
        var status = RunStatus.FromExit(exited, outputTruncated);
        object end = outputUnstored is null
            ? new RunCompleted(runId, status, exited.ExitCode, elapsedMs, problem, now)
            : new RunFailed(runId, $"The program ended ({status}, exit code {exited.ExitCode?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none"}), "
                + $"but its output could not be kept: {outputUnstored}. The record names it by digest and size only.", now);
        return [exited, new OutputRecorded(runId, stdout, stderr, now), .. artifacts, end];
    }

    /// <summary>
    /// The audit store refused a run's ending events for another reason than being away (a constraint, a value it cannot hold,
    /// a fault of this service): the journal could not do better later, so the run ends failed, saying what it had ended
    /// with and why that is not in the record. error is the store's own account, cleaned to be recordable.
    /// </summary>
    public static object[] OutcomeRefused(Guid runId, IReadOnlyList<object> refused, string error, DateTimeOffset now) =>
        [new RunFailed(runId, $"The run's outcome could not be recorded: the audit store refused it ({ClientText.Clean(error, ClientText.MaxError)}). "
            + $"{EndingOf(refused)}; the events that said so, with its exit and output, are not in the record.", now)];

    /// <summary>
    /// The first account of a refusal for good: the facts of the refused batch that are not its ending (the sandbox's exit,
    /// the outputs) with a RunFailed in place of the terminal event, since the store may have refused only that. Should the
    /// store refuse these too, OutcomeRefused is the account. Empty when the batch had nothing but its ending.
    /// </summary>
    public static object[] OutcomeRefusedKeepingFacts(Guid runId, IReadOnlyList<object> refused, string error, DateTimeOffset now)
    {
        var facts = refused.Where(e => e is not (RunCompleted or RunFailed or RunAbandoned)).ToArray();
        if (facts.Length == 0)
            return [];
        return [.. facts, new RunFailed(runId, $"The run's outcome could not be recorded: the audit store refused it ({ClientText.Clean(error, ClientText.MaxError)}). "
            + $"{EndingOf(refused)}; the event that said so is not in the record (its exit and output are).", now)];
    }

    private static string EndingOf(IReadOnlyList<object> refused) => refused.LastOrDefault(e => e is RunCompleted or RunFailed or RunAbandoned) switch
    {
        RunCompleted c => $"It had ended {c.Status}{(c.ExitCode is { } code ? $" with exit code {code.ToString(System.Globalization.CultureInfo.InvariantCulture)}" : "")}",
        RunFailed f => $"It had failed: {ClientText.Clean(f.Reason, ClientText.MaxError)}",
        _ => "Its ending",
    };

    /// <summary>The sandbox broke while the program ran, or shutdown's grace period ran out and it was killed.</summary>
    public static object[] SandboxFailed(Guid runId, string error, bool shutDown, DateTimeOffset now) =>
    [
        new RunFailed(runId, shutDown
            ? "The service shut down before the run finished (grace period exceeded); the sandbox was killed."
            : "The sandbox failed: " + error, now),
    ];

    /// <summary>Recorded only once the engine answered: how says who established that the container is gone (SandboxRemoval).</summary>
    public static object[] Removed(Guid runId, string containerId, string how, DateTimeOffset now) =>
        [new SandboxRemoved(runId, containerId, how, now)];

    /// <summary>
    /// A run this node left without a terminal event (crash or kill) and without a journaled outcome: abandoned, naming the
    /// node, with what is known of its sandboxes (recorded for it, and which of them the restart removed).
    /// </summary>
    public static object[] Abandon(Guid runId, string node, IReadOnlyCollection<string> containers, IReadOnlyCollection<string> swept, DateTimeOffset now,
        bool waitedInQueue = false)
    {
        var reason = waitedInQueue
            ? "The api node that recorded this run stopped (crash or kill) while the run waited in the queue for an executor; it never ran."
            : containers.Count == 0
            ? "The service stopped (crash or kill) before a sandbox was recorded for this run: it was waiting for a slot or its "
              + "sandbox had just been handed over; no outcome is known."
            : containers.All(swept.Contains)
                ? "The service stopped while this run was in flight (crash or kill); its sandbox was removed at restart."
                : "The service stopped while this run was in flight (crash or kill); its sandbox was no longer in the engine at restart.";
        return [new RunAbandoned(runId, reason, node, now)];
    }

    /// <summary>
    /// A run whose queue row was moved to refused or abandoned, but whose terminal event was never committed (the node
    /// stopped, or the store and the journal failed, in between): the node's recovery records the one terminal event the
    /// move meant, at the time of the move, either when the node restarts or, while it runs, from its heartbeat. Null for a
    /// queue state that ends no run.
    /// </summary>
    public static object[]? EndMovedRow(Guid runId, MovedRow row, string node, bool atRestart)
    {
        // Only what the row and this node know: who recorded the run, who held it, how long it waited, when this node records it.
        var when = atRestart
            ? $"recorded when node '{node}' restarted: it had not been committed before that node's previous process stopped"
            : $"recorded later by node '{node}' (its heartbeat's recovery pass): it had not been committed when the row moved";
        return row.State switch
        {
            // Rows move to refused only when the queue wait ran out; a draining api node leaves its runs queued.
            "refused" => [new RunCompleted(runId, RunStatus.Refused, null, row.WaitedMs,
                $"No executor took the run within its queue wait ({row.WaitedMs} ms): every sandbox slot was busy, or its tenant was at its "
                + $"ceiling. The refusal was {when}.", row.MovedAt)],
            // Claimed: abandoned while an executor held it; whether and how it ran is not known here.
            "abandoned" when row.ClaimedBy is { } holder => [new RunAbandoned(runId,
                $"The run was abandoned while executor node '{holder}' held it; the abandonment was {when}. No outcome is known.", node, row.MovedAt)],
            // Unclaimed rows are abandoned only by the restart of the api node that recorded them after it stopped uncleanly.
            "abandoned" => [new RunAbandoned(runId,
                $"The api node that recorded this run{(row.RequestedBy is { } by ? $" ('{by}')" : "")} stopped without a clean shutdown while the run "
                + $"waited in the queue for an executor; it never ran. The abandonment was {when}.", node, row.MovedAt)],
            _ => null,
        };
    }

    /// <summary>An executor claimed the run but its inputs could not be read from the evidence store (erased, or the store is away).</summary>
    public static object[] InputsUnreadable(Guid runId, string error, DateTimeOffset now) =>
        [new RunFailed(runId, "The executor could not read the run's inputs: " + error, now)];

    /// <summary>
    /// The executor holding the run stopped renewing its lease: the node went silent (no heartbeat for longer than the grace),
    /// or it still heartbeats but no longer holds the run (its execution ended without a record) and the lease stayed
    /// expired for longer than the grace.
    /// </summary>
    public static object[] AbandonSilentNode(Guid runId, string node, DateTimeOffset? lastHeartbeat, int graceSeconds, DateTimeOffset now)
    {
        var alive = lastHeartbeat is { } beat && beat >= now.AddSeconds(-graceSeconds);
        var since = lastHeartbeat is { } at ? $"since {at:O}" : "ever";
        var reason = alive
            ? $"Executor node '{node}' stopped renewing this run's lease although it still heartbeats: it no longer holds the run (its "
              + $"execution ended without a record), and the lease stayed expired for longer than the {graceSeconds} s grace; no outcome is known."
            : $"Executor node '{node}' went silent while running this run: its lease expired and it has not heartbeated {since} "
              + $"(longer than the {graceSeconds} s grace); no outcome is known.";
        reason += " Should the node return with the run's outcome, it is recorded as late_outcome_recorded; its sandbox is removed when the node restarts.";
        return [new RunAbandoned(runId, reason, node, now)];
    }

    /// <summary>
    /// A node's true outcome arriving after the run was abandoned: recorded beside the one terminal event, never as a second one.
    /// terminalName is the event type name the node meant to record.
    /// </summary>
    public static LateOutcomeRecorded LateOutcome(Guid runId, string node, string terminalName, object terminal, DateTimeOffset now) => terminal switch
    {
        RunCompleted c => new(runId, node, terminalName, c.Status, c.ExitCode, c.Reason, c.At, now),
        RunFailed f => new(runId, node, terminalName, RunStatus.Error, null, f.Reason, f.At, now),
        RunAbandoned a => new(runId, node, terminalName, RunStatus.Abandoned, null, a.Reason, a.At, now),
        _ => throw new ArgumentException($"{terminal.GetType().Name} is not a terminal event.", nameof(terminal)),
    };

    /// <summary>An allowed run enters the run queue, already claimed when the recording node runs it itself.</summary>
    public static RunQueued Queued(Guid runId, string queuedBy, string? claimedBy, DateTimeOffset now) => new(runId, queuedBy, claimedBy, now);

    /// <summary>An artifact kept in the evidence store under its digest.</summary>
    public static ArtifactRecorded ArtifactStored(Guid runId, string name, long bytes, string sha256, DateTimeOffset now) =>
        new(runId, name, bytes, sha256, MediaTypes.For(name), ArtifactStatus.Stored, null, now);

    /// <summary>An entry the supervisor did not send (skipped, or over a cap): its reason becomes its status.</summary>
    public static ArtifactRecorded ArtifactNotSent(Guid runId, string name, long bytes, string? sha256, string? reason, DateTimeOffset now) =>
        new(runId, name, bytes, sha256, null, ArtifactStatus.Of(reason), reason, now);

    /// <summary>An artifact received whole whose store was unreachable: the digest is known, the content not kept.</summary>
    public static ArtifactRecorded ArtifactNotStored(Guid runId, string name, long bytes, string? sha256, DateTimeOffset now) =>
        new(runId, name, bytes, sha256, MediaTypes.For(name), ArtifactStatus.Skipped, "not_stored", now);

    private static SandboxCreated Created(Guid runId, string node, SandboxFacts s, DateTimeOffset now) =>
        new(runId, s.ContainerId, s.Image, s.ImageId, node, s.FromPool, s.CreatedAt, s.Settings, now, s.RuntimeId, s.Isolation, s.LayerDigest, s.SbomDigest);
}
