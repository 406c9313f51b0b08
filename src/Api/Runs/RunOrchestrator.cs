using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using Marten;
using Sandbox.Audited.Api.Policies;
using Sandbox.Audited.Api.Runtimes;
using Sandbox.Audited.Api.Streaming;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Domain.Runtimes;
using Sandbox.Audited.Domain.Text;
using Sandbox.Audited.Executor;
using Sandbox.Audited.Executor.Pool;
using Sandbox.Audited.Executor.Sandboxes;
using Microsoft.Extensions.Options;

namespace Sandbox.Audited.Api.Runs;

/// <summary>Recording the request and decision failed: nothing may run (write-ahead rule).</summary>
public sealed class WriteAheadException(Exception inner) : Exception("The run could not be recorded; nothing was run.", inner);

/// <summary>A run that was recorded and decided; Summary is its state after the decision.</summary>
public sealed record AdmittedRun(RunStream Stream, ValidRunRequest Request, PolicyDecision Decision, Caller Caller, Stopwatch Clock, List<object> Events)
{
    public RunPhases Phases { get; } = new(Clock);

    /// <summary>The exact image to run on (a reproduction: the original's recorded image id); null for the language's current image.</summary>
    public string? ImageId { get; init; }

    /// <summary>Set once an outcome went to the node's journal: later events of the run go there too, in order.</summary>
    public bool Recording { get; set; }

    public RunSummary Summary
    {
        get
        {
            lock (Events)
                return RunSummary.Fold(Stream.RunId, Events.ToList());
        }
    }
}

/// <summary>
/// The flow of one run, in the order DESIGN.md gives: record the request and the policy decision (committed
/// before any container is touched), admit, take a sandbox, run, record the outcome with exactly one
/// terminal event, and remove the sandbox off the request path.
/// </summary>
public sealed partial class RunOrchestrator(
    IDocumentStore store,
    PolicyHost policies,
    Admission admission,
    SandboxPool pool,
    SandboxRunner runner,
    SandboxFactory factory,
    RuntimeImageRegistry images,
    IOptions<ExecutorOptions> executorOptions,
    TimeProvider clock,
    RunFeed feed,
    OutcomeJournal journal,
    EvidenceStore evidence,
    RunArtifacts artifacts,
    ILogger<RunOrchestrator> logger)
{
    private readonly ConcurrentDictionary<Guid, Task> _inFlight = new();
    private readonly ConcurrentDictionary<string, Task> _removals = new();
    private readonly CancellationTokenSource _abort = new();

    // An output kept inside its event (the evidence store is away) is held whole, as text and JSON, until journaled: one
    // such output at a time keeps that failure path's memory bounded too.
    private readonly SemaphoreSlim _inlineOutput = new(1, 1);

    public int InFlight => _inFlight.Count;

    public IReadOnlyCollection<Task> InFlightTasks => _inFlight.Values.ToList();

    /// <summary>Removals still running off the request path; shutdown awaits them so no container outlives the service.</summary>
    public IReadOnlyCollection<Task> PendingRemovals => _removals.Values.ToList();

    /// <summary>Records a request that failed validation or authorization: RequestRejected, then its terminal event.</summary>
    public async Task<Guid> RejectAsync(Caller caller, ClientInfo client, int httpStatus, IReadOnlyList<string> errors, string? language, string? code, CancellationToken ct)
    {
        var runId = Guid.CreateVersion7();
        var now = clock.GetUtcNow();
        try
        {
            await RecordAsync(new RunStream(store, runId, Context(caller, client)),
            [
                new RequestRejected(runId, caller, httpStatus, errors, language, code is null ? null : Sha256Hex.Of(code), client, now),
                new RunCompleted(runId, RunStatus.Rejected, null, 0, string.Join(" ", errors), now),
            ], ct);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // A refusal that cannot be recorded is answered 503 + Retry-After (the audit store is away), never 500.
            LogWriteAheadFailed(e, runId);
            throw new WriteAheadException(e);
        }
        return runId;
    }

    /// <summary>
    /// Stores the inputs (code, stdin, each file) in the tenant's evidence store, then records the request (their digests)
    /// and the policy decision in one commit. A denied run also gets its terminal event. Nothing runs unless both succeeded.
    /// </summary>
    public async Task<AdmittedRun> RequestAsync(Caller caller, ClientInfo client, ValidRunRequest request, CancellationToken ct,
        Guid? reproduces = null, string? imageId = null)
    {
        var watch = Stopwatch.StartNew();
        var runId = Guid.CreateVersion7();
        var bundle = policies.Active;
        var decision = bundle.Evaluate(PolicyInputOf(caller, request));
        var code = Encoding.UTF8.GetBytes(request.Code);
        List<FileDigest> files;
        try
        {
            await evidence.PutAsync(caller.Tenant, code, ct);
            await evidence.PutAsync(caller.Tenant, request.Stdin, ct);
            files = [];
            foreach (var file in request.Files)
            {
                // Streamed from the request's spool (multipart) or memory (JSON) into the store, never read whole; the store
                // refuses it (InvalidDataException) if it no longer hashes to the digest taken when it was received.
                await using var content = await file.Open(ct);
                var stored = await evidence.PutAsync(caller.Tenant, new StoredContent(file.Sha256, file.Bytes), content, ct);
                files.Add(new FileDigest(file.Name, stored.Bytes, stored.Sha256));
            }
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            LogWriteAheadFailed(e, runId);
            throw new WriteAheadException(e);
        }
        var now = clock.GetUtcNow();
        var events = new List<object>
        {
            new RunRequested(runId, caller, request.Language, null, Sha256Hex.Of(code), code.Length,
                Sha256Hex.Of(request.Stdin), request.Stdin.Length, request.Args, files,
                request.Limits, request.Classification, client, executorOptions.Value.NodeId, now, request.Runtime, request.Isolation,
                InputsStored: true, ReproducesRunId: reproduces),
            new PolicyEvaluated(runId, decision.Decision, decision.BundleDigest, decision.RuleIds, decision.Limits, decision.Findings, decision.Reasons, now,
                decision.Runtime, decision.Isolation),
        };
        if (!decision.Allowed)
            events.Add(new RunCompleted(runId, RunStatus.Denied, null, watch.ElapsedMilliseconds, string.Join(" ", decision.Reasons), now));

        var stream = new RunStream(store, runId, Context(caller, client));
        try
        {
            await RecordAsync(stream, events, ct);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            LogWriteAheadFailed(e, runId);
            throw new WriteAheadException(e);
        }
        var admitted = new AdmittedRun(stream, request, decision, caller, watch, events) { ImageId = imageId };
        admitted.Phases.Recorded();
        return admitted;
    }

    public static PolicyInput PolicyInputOf(Caller caller, ValidRunRequest request) =>
        new(caller, request.Language, request.Classification, request.Limits, request.Code, request.Args.Count, request.Files.Count, request.Stdin.Length,
            request.Runtime, request.Isolation);

    /// <summary>Stops admitting runs; running ones carry on.</summary>
    public void StopAdmitting() => admission.Close();

    /// <summary>After the shutdown grace period: stop what still runs; each gets its terminal event.</summary>
    public void AbortRemaining() => _abort.Cancel();

    /// <summary>
    /// Starts the run's execution and tracks it until its terminal event is written. The run belongs to the
    /// service, not the HTTP request: a client that goes away does not stop it, only shutdown does.
    /// </summary>
    public Task<RunSummary> ExecuteAsync(AdmittedRun run)
    {
        var task = ExecuteCoreAsync(run, _abort.Token);
        _inFlight[run.Stream.RunId] = task;
        _ = task.ContinueWith(_ => _inFlight.TryRemove(run.Stream.RunId, out Task? _), TaskScheduler.Default);
        return task;
    }

    private async Task<RunSummary> ExecuteCoreAsync(AdmittedRun run, CancellationToken ct)
    {
        var runId = run.Stream.RunId;

        var (lease, refusal) = await admission.EnterAsync(run.Caller.Tenant, ct);
        if (refusal is not null)
        {
            await CommitOrKeepAsync(run, [new RunCompleted(runId, RunStatus.Refused, null, run.Clock.ElapsedMilliseconds, refusal.Reason, clock.GetUtcNow())]);
            throw new CapacityException(runId, refusal);
        }

        using (lease)
        {
            PreparedSandbox sandbox;
            try
            {
                var profile = SandboxProfile.For(run.Decision.Runtime ?? run.Request.Language, run.Request.Language,
                    run.Decision.Isolation ?? Isolation.Standard, run.Decision.Limits) with { ImageId = run.ImageId };
                sandbox = await pool.AcquireAsync(profile, runId, ct);
                run.Phases.SandboxReady();
                feed.Running(runId, sandbox.ContainerId);
            }
            catch (SandboxStartException e)
            {
                // The engine created a container for this run: it is named in the record, with how its removal ended.
                LogSandboxUnavailable(e, runId);
                var c = e.Container;
                var now = clock.GetUtcNow();
                List<object> events =
                [
                    new SandboxCreated(runId, c.ContainerId, c.Image, c.ImageId, executorOptions.Value.NodeId, false, c.CreatedAt, c.Settings, now),
                    new RunFailed(runId, e.Message, now),
                ];
                if (e.Removal is { } how)
                    events.Add(new SandboxRemoved(runId, c.ContainerId, how, now));
                await CommitOrKeepAsync(run, events);
                throw new SandboxUnavailableException(runId, e);
            }
            catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
            {
                LogSandboxUnavailable(e, runId);
                await CommitOrKeepAsync(run, [new RunFailed(runId, "No sandbox could be created: " + e.Message, clock.GetUtcNow())]);
                throw new SandboxUnavailableException(runId, e);
            }

            // Which sandbox serves the run is recorded while the code runs, so that a crash mid-run leaves the container
            // in the history; a run that ends within AnnounceAfter records it with its outcome instead (one commit, not two
            // competing for the same 2 cores). Should the announcing commit fail, the facts go with the outcome too.
            // Recorded once per image and then cached: the first run of a new image pays for its record, later ones do not.
            var image = await images.TryRecordedAsync(sandbox.Profile.Runtime, sandbox.ImageId, ct);
            object[] sandboxEvents = [SandboxCreatedEvent(runId, sandbox, image), new SandboxStarted(runId, sandbox.ContainerId, sandbox.StartedAt)];
            var execution = runner.RunAsync(sandbox, run.Request, run.Decision.Limits, chunk => feed.Output(runId, chunk), ct);
            var announced = AnnounceUnlessFinishedAsync(run, sandboxEvents, execution, ct);
            List<object> outcomeEvents;
            SandboxOutcome? collected = null;
            try
            {
                var outcome = collected = await execution;
                run.Phases.Exited();
                var stdout = await StoreOutputAsync(run, outcome.Stdout, Math.Max(outcome.Exit.StdoutProduced, outcome.Stdout.Length), outcome.StdoutTruncated);
                var stderr = await StoreOutputAsync(run, outcome.Stderr, Math.Max(outcome.Exit.StderrProduced, outcome.Stderr.Length), outcome.StderrTruncated);
                var now = clock.GetUtcNow();
                var exited = new SandboxExited(runId, outcome.Exit.ExitCode, outcome.Exit.Signal, outcome.Exit.TimedOut, outcome.Exit.OomKilled,
                    outcome.Exit.PidsLimitHit, outcome.Exit.WallUs, outcome.Exit.CpuUserUs, outcome.Exit.CpuSysUs, outcome.Exit.MaxRssKb, now);
                var output = new OutputRecorded(runId, stdout, stderr, now);
                var status = RunStatus.FromExit(exited, outcome.StdoutTruncated || outcome.StderrTruncated);
                var kept = await artifacts.StoreAsync(run.Caller.Tenant, runId, outcome.Artifacts, CancellationToken.None);
                outcomeEvents = [exited, output, .. kept, new RunCompleted(runId, status, exited.ExitCode, run.Clock.ElapsedMilliseconds, outcome.Problem, now)];
            }
            catch (Exception e)
            {
                var reason = e is OperationCanceledException
                    ? "The service shut down before the run finished (grace period exceeded); the sandbox was killed."
                    : "The sandbox failed: " + e.Message;
                LogRunFailed(e, runId);
                outcomeEvents = [new RunFailed(runId, reason, clock.GetUtcNow())];
            }
            try
            {
                var pending = await announced ? [] : sandboxEvents;
                await CommitOrKeepAsync(run, [.. pending, .. outcomeEvents]);
                run.Phases.Committed();
            }
            finally
            {
                collected?.DeleteSpool();
                pool.Replenish();
                var removal = RemoveAsync(run, sandbox.ContainerId);
                _removals[sandbox.ContainerId] = removal;
                _ = removal.ContinueWith(_ => _removals.TryRemove(sandbox.ContainerId, out Task? _), TaskScheduler.Default);
            }
        }
        return run.Recording ? run.Summary with { Status = RunStatus.Recording } : run.Summary;
    }

    /// <summary>
    /// Commits events that end a run; if the audit store refuses them, keeps them in the node's journal (fsynced) for the
    /// journal worker to commit when the store returns. Only when the disk fails too does the failure reach the client.
    /// </summary>
    private async Task CommitOrKeepAsync(AdmittedRun run, IReadOnlyList<object> events, string? part = null)
    {
        if (!run.Recording)
        {
            try
            {
                // After the terminal event the live feed has closed the run: a later removal is recorded, not broadcast.
                if (part is null)
                    await AppendAsync(run, events, CancellationToken.None);
                else
                    await run.Stream.AppendAsync(events, CancellationToken.None);
                return;
            }
            catch (Exception e)
            {
                LogOutcomeJournaled(e, run.Stream.RunId);
            }
        }
        await journal.KeepAsync(run.Stream, events, run.Recording ? part : null);
        if (part is null)
            run.Recording = true;
        lock (run.Events)
            run.Events.AddRange(events);
    }

    private static readonly TimeSpan AnnounceAfter = TimeSpan.FromMilliseconds(50);

    private async Task<bool> AnnounceUnlessFinishedAsync(AdmittedRun run, IReadOnlyList<object> events, Task execution, CancellationToken ct)
    {
        try
        {
            if (await Task.WhenAny(execution, Task.Delay(AnnounceAfter, ct)) == execution)
                return false;
            await AppendAsync(run, events, ct);
            return true;
        }
        catch (Exception e)
        {
            LogAnnounceFailed(e, run.Stream.RunId);
            return false;
        }
    }

    private SandboxCreated SandboxCreatedEvent(Guid runId, PreparedSandbox sandbox, RuntimeImageRecorded? image) =>
        new(runId, sandbox.ContainerId, sandbox.Image, sandbox.ImageId, executorOptions.Value.NodeId, sandbox.FromPool, sandbox.CreatedAt,
            sandbox.Settings, clock.GetUtcNow(), sandbox.Profile.Runtime, sandbox.Profile.Isolation, image?.LayerDigest, image?.SbomDigest);

    // Removal happens after the client has its answer; SandboxRemoved therefore follows the terminal event, and only once the
    // engine confirmed (or answered that the container is gone). A removal that keeps failing is left to the reaper, which records it.
    private async Task RemoveAsync(AdmittedRun run, string containerId)
    {
        var how = await factory.DestroyAsync(containerId, CancellationToken.None);
        if (how is null)
            return;
        try
        {
            await CommitOrKeepAsync(run, [new SandboxRemoved(run.Stream.RunId, containerId, how, clock.GetUtcNow())], "removed");
        }
        catch (Exception e)
        {
            LogRemovalNotRecorded(e, run.Stream.RunId);
        }
    }

    private async Task AppendAsync(AdmittedRun run, IReadOnlyList<object> events, CancellationToken ct)
    {
        await RecordAsync(run.Stream, events, ct);
        lock (run.Events)
            run.Events.AddRange(events);
    }

    /// <summary>Commits events to the run's stream, then tells the live feed (stream subscribers, metrics).</summary>
    private async Task RecordAsync(RunStream stream, IReadOnlyList<object> events, CancellationToken ct)
    {
        await stream.AppendAsync(events, ct);
        feed.Recorded(stream.RunId, stream.Version - events.Count + 1, events);
    }

    /// <summary>
    /// Stores an output stream in the evidence store straight from its capture (memory, then its spool file: never copied
    /// whole) and describes it with a preview. When the store is away the bytes go inside the event instead (as before the
    /// store), so that the outcome journal keeps them whole.
    /// </summary>
    private async Task<StreamOutput> StoreOutputAsync(AdmittedRun run, CapturedOutput output, long produced, bool truncated)
    {
        try
        {
            await using var content = await output.OpenReadAsync(CancellationToken.None);
            await evidence.PutAsync(run.Caller.Tenant, new StoredContent(output.Sha256, output.Length), content, CancellationToken.None);
        }
        catch (Exception e)
        {
            LogOutputInline(e, run.Stream.RunId);
            await _inlineOutput.WaitAsync(CancellationToken.None);
            try
            {
                return Describe(await output.ToArrayAsync(CancellationToken.None), produced, truncated);
            }
            finally
            {
                _inlineOutput.Release();
            }
        }
        return Preview(output.Sha256, output.Length, await output.HeadAsync(StreamOutput.PreviewBytes, CancellationToken.None), produced, truncated);
    }

    /// <summary>A stored stream: digest and size of all its bytes, content limited to its first PreviewBytes bytes (the head).</summary>
    public static StreamOutput Preview(string sha256, long bytes, byte[] head, long produced, bool truncated)
    {
        var text = Utf8Text.TryDecodeOutput(head) ?? Utf8Text.TryDecodeOutput(Utf8Text.TrimPartial(head));
        return text is not null
            ? new StreamOutput(sha256, bytes, produced, truncated, "utf8", text, Stored: true)
            : new StreamOutput(sha256, bytes, produced, truncated, "base64", Convert.ToBase64String(head), Stored: true);
    }

    /// <summary>Output is kept as text when it is valid UTF-8 without NUL (jsonb cannot hold NUL), otherwise as base64.</summary>
    public static StreamOutput Describe(byte[] bytes, long produced, bool truncated)
    {
        var sha = Sha256Hex.Of(bytes);
        var text = Utf8Text.TryDecodeOutput(bytes);
        return text is not null
            ? new StreamOutput(sha, bytes.Length, produced, truncated, "utf8", text)
            : new StreamOutput(sha, bytes.Length, produced, truncated, "base64", Convert.ToBase64String(bytes));
    }

    private static WriteContext Context(Caller caller, ClientInfo client) => new(caller.Subject, client.CorrelationId, Tenant: caller.Tenant);

    [LoggerMessage(Level = LogLevel.Error, Message = "Run {RunId}: recording the request and decision failed; nothing was run")]
    private partial void LogWriteAheadFailed(Exception e, Guid runId);

    [LoggerMessage(Level = LogLevel.Error, Message = "Run {RunId}: no sandbox could be created")]
    private partial void LogSandboxUnavailable(Exception e, Guid runId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Run {RunId}: recording its sandbox failed; retrying with the outcome")]
    private partial void LogAnnounceFailed(Exception e, Guid runId);

    [LoggerMessage(Level = LogLevel.Error, Message = "Run {RunId}: the sandbox failed")]
    private partial void LogRunFailed(Exception e, Guid runId);

    [LoggerMessage(Level = LogLevel.Error, Message = "Run {RunId}: its outcome could not be committed; kept in the node's journal until the audit store returns")]
    private partial void LogOutcomeJournaled(Exception e, Guid runId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Run {RunId}: the evidence store is unavailable; its output is kept inside the outcome event")]
    private partial void LogOutputInline(Exception e, Guid runId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Run {RunId}: SandboxRemoved could not be recorded")]
    private partial void LogRemovalNotRecorded(Exception e, Guid runId);
}

/// <summary>Where a run's time went, marked as it happens; sent back to the client as a Server-Timing header.</summary>
public sealed class RunPhases(Stopwatch clock)
{
    private double _recorded, _sandbox, _exited, _committed;

    public void Recorded() => _recorded = clock.Elapsed.TotalMilliseconds;
    public void SandboxReady() => _sandbox = clock.Elapsed.TotalMilliseconds;
    public void Exited() => _exited = clock.Elapsed.TotalMilliseconds;
    public void Committed() => _committed = clock.Elapsed.TotalMilliseconds;

    /// <summary>
    /// Each phase's own duration in ms: write-ahead commit, sandbox hand-over, the run itself, outcome commit. A run that
    /// failed on the way names only the phases it finished.
    /// </summary>
    public string ToServerTiming()
    {
        (string Name, double At)[] marks = [("record", _recorded), ("sandbox", _sandbox), ("run", _exited), ("outcome", _committed)];
        var metrics = new List<string>();
        var previous = 0.0;
        foreach (var (name, at) in marks.TakeWhile(m => m.At > 0))
        {
            metrics.Add(FormattableString.Invariant($"{name};dur={at - previous:F1}"));
            previous = at;
        }
        return string.Join(", ", metrics);
    }
}

public sealed class CapacityException(Guid runId, AdmissionRefusal refusal) : Exception(refusal.Reason)
{
    public Guid RunId => runId;
    public AdmissionRefusal Refusal => refusal;
}

public sealed class SandboxUnavailableException(Guid runId, Exception inner) : Exception(inner.Message, inner)
{
    public Guid RunId => runId;
}
