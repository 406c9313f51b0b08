using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using Marten;
using Sandbox.Audited.Api.Callbacks;
using Sandbox.Audited.Api.Nodes;
using Sandbox.Audited.Api.Policies;
using Sandbox.Audited.Api.Runtimes;
using Sandbox.Audited.Api.Streaming;
using Sandbox.Audited.Audit.Events;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Audit.Queue;
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
using Polly;
using Polly.Retry;

using Sandbox.Audited.Api.Idempotency;

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

    /// <summary>Why the outcome went to the journal (the "recording" answer says it): one of RunOrchestrator's Journaled* texts.</summary>
    public string? RecordingWhy { get; set; }

    /// <summary>The executor slot this node holds for the run while it runs it here; null while it waits in the queue.</summary>
    public Admission.Slot? Slot { get; set; }

    /// <summary>The warm sandbox this node picked for the run while recording it (null inside: the pool had none).</summary>
    public Task<PreparedSandbox?>? Warm { get; init; }

    /// <summary>The client was answered at once (wait:false): a draining node need not wait for the run's end.</summary>
    public bool Detached { get; set; }

    /// <summary>The run has a queue row (every allowed run): its terminal event also ends the row.</summary>
    public bool Queued { get; init; }

    /// <summary>Recorded by another node: its live items are relayed to the api nodes (FeedRelay), whose feeds follow it.</summary>
    public bool Remote { get; init; }

    /// <summary>This node's own execution of a run it recorded, once its executor claimed it from the queue.</summary>
    public Task<RunSummary>? Execution { get; set; }

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
    RunQueue queue,
    QueueSignals signals,
    FeedRelay relay,
    IOptions<NodeOptions> node,
    IOptions<QueueOptions> queueOptions,
    ILogger<RunOrchestrator> logger)
{
    // Runs this node recorded and waits for in the queue: when its own executor claims one, it runs this very object.
    private readonly ConcurrentDictionary<Guid, AdmittedRun> _waiting = new();
    private readonly ConcurrentDictionary<Guid, Task> _inFlight = new();
    private readonly ConcurrentDictionary<string, Task> _removals = new();
    private readonly CancellationTokenSource _abort = new();

    public int InFlight => _inFlight.Count;

    /// <summary>Runs this process runs or waits for; the heartbeat renews the leases of those it claimed.</summary>
    public IReadOnlyCollection<Guid> InFlightRunIds => _inFlight.Keys.ToList();

    public IReadOnlyCollection<Task> InFlightTasks => _inFlight.Values.ToList();

    /// <summary>Removals still running off the request path; shutdown awaits them so no container outlives the service.</summary>
    public IReadOnlyCollection<Task> PendingRemovals => _removals.Values.ToList();

    /// <summary>Records a request that failed validation or authorization: RequestRejected, then its terminal event.</summary>
    public async Task<Guid> RejectAsync(Caller caller, ClientInfo client, int httpStatus, IReadOnlyList<string> errors, string? language, string? code, CancellationToken ct)
    {
        var runId = Guid.CreateVersion7();
        try
        {
            await RecordAsync(new RunStream(store, runId, Context(caller, client)),
                RunDecisions.Reject(runId, caller, client, httpStatus, errors, language, code, clock.GetUtcNow()), ct);
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
        Guid? reproduces = null, string? imageId = null, string? callbackUrl = null, NewClaim? idempotency = null)
    {
        var watch = Stopwatch.StartNew();
        var runId = Guid.CreateVersion7();
        var bundle = policies.Active;
        var decision = bundle.Evaluate(PolicyInputOf(caller, request));
        var code = Encoding.UTF8.GetBytes(request.Code);
        List<FileDigest> files;
        // Code and stdin are stored by the write-ahead commit itself: validation caps them (256 KiB, 1 MiB) within one chunk.
        ReadOnlyMemory<byte>[] staged = [code, request.Stdin];
        try
        {
            files = [];
            foreach (var file in request.Files)
            {
                // Streamed from the request's spool (multipart) or memory (JSON) into the store, never read whole; the store
                // refuses it (InvalidDataException) if it no longer hashes to the digest taken when it was received.
                await using var content = await file.Open(ct);
                var stored = await evidence.PutAsync(caller.Tenant, new StoredContent(file.Sha256, file.Bytes), content, new ContentHold(runId, executorOptions.Value.NodeId), ct);
                files.Add(new FileDigest(file.Name, stored.Bytes, stored.Sha256));
            }
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            LogWriteAheadFailed(e, runId);
            throw new WriteAheadException(e);
        }
        var now = clock.GetUtcNow();
        IReadOnlyList<object> requested = RunDecisions.Request(runId, caller, client, request, files, decision, executorOptions.Value.NodeId,
            watch.ElapsedMilliseconds, now, reproduces);

        // An allowed run enters the run queue in the same commit. A node that is also an executor and has a free slot takes
        // it at once (inserted claimed: no hand-over, no extra round trip); otherwise any executor is woken to claim it.
        var nodeId = executorOptions.Value.NodeId;
        var slot = decision.Allowed && node.Value.Executor ? admission.TryEnter(caller.Tenant) : null;
        var work = new RunWork(runId,
            new QueuedRequest(request.Language, Sha256Hex.Of(code), code.Length, Sha256Hex.Of(request.Stdin), request.Stdin.Length, request.Args, files,
                request.Limits, request.Classification, request.Runtime, request.Isolation),
            decision, caller, imageId, client.CorrelationId);
        var callback = decision.Allowed ? CallbackOutbox.Enqueue(runId, caller.Tenant, callbackUrl) : null;
        var stream = new RunStream(store, runId, Context(caller, client));

        // One commit: the request, the decision, its queue entry, inputs, callback and key. Not cancelled by a client that goes
        // away: a commit cut short could be recorded and yet look failed here.
        Task CommitAsync(List<object> events, string? claimedBy) => RecordAsync(stream, events, CancellationToken.None, session =>
        {
            EvidenceStore.Stage(session, caller.Tenant, staged);
            if (decision.Allowed)
                queue.Enqueue(session, work, caller.Tenant, nodeId, claimedBy, queueOptions.Value.LeaseSeconds, admission.Options.MaxConcurrentRunsPerTenant);
            callback?.Invoke(session);
            if (idempotency is not null)
                IdempotencyStore.AttachRun(session, caller, idempotency, runId);
        });
        List<object> WithQueued(string? claimedBy) => decision.Allowed ? [.. requested, RunDecisions.Queued(runId, nodeId, claimedBy, now)] : [.. requested];

        // Picked while the request is recorded: the pick only asks the engine whether the container still runs, and the
        // sandbox is handed the run only once the commit succeeded (otherwise it goes back to the pool).
        var warm = slot is null ? null : pool.TakeWarmAsync(ProfileOf(decision, request, imageId), CancellationToken.None);
        List<object> events;
        try
        {
            try
            {
                await CommitAsync(events = WithQueued(slot is null ? null : nodeId), slot is null ? null : nodeId);
            }
            catch (Exception e) when (slot is not null && RunQueue.IsTenantAtCeiling(e))
            {
                // The tenant runs its ceiling elsewhere in the cluster: nothing was recorded. Recorded again, queued for any
                // executor, whose claim waits for the tenant's room.
                slot.Dispose();
                slot = null;
                GiveBack(warm);
                warm = null;
                await CommitAsync(events = WithQueued(null), null);
            }
        }
        catch (Exception e)
        {
            slot?.Dispose();
            GiveBack(warm);
            LogWriteAheadFailed(e, runId);
            throw new WriteAheadException(e);
        }
        var admitted = new AdmittedRun(stream, request, decision, caller, watch, events) { ImageId = imageId, Slot = slot, Warm = warm, Queued = decision.Allowed };
        admitted.Phases.Recorded();
        return admitted;
    }

    private static SandboxProfile ProfileOf(PolicyDecision decision, ValidRunRequest request, string? imageId) =>
        SandboxProfile.For(decision.Runtime ?? request.Language, request.Language, decision.Isolation ?? Isolation.Standard, decision.Limits) with { ImageId = imageId };

    /// <summary>A warm sandbox picked for a run that will not run here after all goes back to the pool (it ran nothing), or is removed.</summary>
    private void GiveBack(Task<PreparedSandbox?>? warm) =>
        _ = warm?.ContinueWith(picked =>
        {
            if (picked.IsCompletedSuccessfully && picked.Result is { } sandbox && !pool.Return(sandbox))
                TrackRemoval(sandbox.ContainerId, factory.DestroyAsync(sandbox.ContainerId, CancellationToken.None));
        }, TaskScheduler.Default);

    /// <summary>A removal off the request path, awaited by shutdown so that no container outlives the service.</summary>
    private void TrackRemoval(string containerId, Task removal)
    {
        _removals[containerId] = removal;
        _ = removal.ContinueWith(_ => _removals.TryRemove(containerId, out Task? _), TaskScheduler.Default);
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
    public Task<RunSummary> ExecuteAsync(AdmittedRun run) => Track(run.Stream.RunId, run.Slot is not null ? ExecuteCoreAsync(run, _abort.Token) : AwaitQueueAsync(run));

    private Task<RunSummary> Track(Guid runId, Task<RunSummary> task)
    {
        _inFlight[runId] = task;
        _ = task.ContinueWith(_ => _inFlight.TryRemove(runId, out Task? _), TaskScheduler.Default);
        return task;
    }

    /// <summary>
    /// The api side of a run that waits in the queue: refused (429) when no executor claimed it within Admission:MaxQueueWaitMs,
    /// by moving its row from queued to refused, which a claim cannot race; otherwise waits for its executor to end it ("run
    /// done" notification, polled as a fallback) and reads the record. A draining node leaves its runs to the queue instead
    /// (<see cref="LeftToTheQueue"/>): the row is durable and any executor takes it.
    /// </summary>
    private async Task<RunSummary> AwaitQueueAsync(AdmittedRun run)
    {
        var runId = run.Stream.RunId;
        var options = admission.Options;
        var done = signals.DoneAsync(runId);
        _waiting[runId] = run;
        using var waiting = admission.TryWait();
        // The write-ahead commit succeeded: whatever the database does now, the client learns the run id. Reads while it is
        // away are retried for as long as the run may take (queue wait, its time limit, one lease), then answered 202.
        var budget = TimeSpan.FromMilliseconds(options.MaxQueueWaitMs + (long)run.Decision.Limits.TimeoutMs) + TimeSpan.FromSeconds(queueOptions.Value.LeaseSeconds);
        var claimed = false;
        try
        {
            signals.WakeWorker(); // this node's own executor, without waiting for the notification's round trip
            var refusal = waiting is null ? new AdmissionRefusal($"the run queue is full ({options.MaxQueueDepth} waiting)", 1) : null;
            var deadline = TimeSpan.FromMilliseconds(options.MaxQueueWaitMs);
            Task<string?> RowStateAsync() => WhileStoreAwayAsync(run, budget, token => new ValueTask<string?>(queue.StateAsync(runId, token)));
            // A wake-up is a hint, not a fact (any role that can log in may NOTIFY): the row says whether the run is over.
            async Task<bool> FalseWakeUpAsync()
            {
                if (!done.IsCompleted || run.Execution is not null
                    || await RowStateAsync() is not ("queued" or "claimed"))
                    return false;
                done = signals.DoneAsync(runId);
                return true;
            }
            while (refusal is null && (!done.IsCompleted || await FalseWakeUpAsync()) && run.Execution is null)
            {
                var left = deadline - run.Clock.Elapsed;
                if (left <= TimeSpan.Zero)
                {
                    refusal = new AdmissionRefusal(
                        $"no executor took the run within {options.MaxQueueWaitMs} ms: all sandbox slots are busy, or tenant '{run.Caller.Tenant}' "
                        + $"already runs {options.MaxConcurrentRunsPerTenant} sandboxes", 2);
                    break;
                }
                await Task.WhenAny(done, Task.Delay(left < Poll ? left : Poll));
                if (done.IsCompleted || run.Execution is not null)
                    continue;
                var state = await RowStateAsync();
                if (state is not ("queued" or "claimed"))
                    break;
                // Draining: a run still unclaimed after this wait stays queued for any executor, and nobody waits here for a run
                // answered 202; a run another executor took is waited for below.
                if (admission.Draining && (run.Detached || state == "queued"))
                    return LeftToTheQueue(run, claimed: state == "claimed");
                if (admission.Draining)
                    break;
            }
            // A refusal whose commit answer was lost to a broken connection shows as the row already refused.
            if (refusal is not null && (await WhileStoreAwayAsync(run, budget, token => new ValueTask<bool>(queue.RefuseAsync(runId, token)))
                                        || await RowStateAsync() == "refused"))
            {
                await CommitOrKeepAsync(run, RunDecisions.Refuse(runId, refusal.Reason, run.Clock.ElapsedMilliseconds, clock.GetUtcNow()));
                throw new CapacityException(runId, refusal);
            }
            // Claimed: by this node (its own execution answers) or by another executor (the record answers once it is done).
            claimed = true;
            while ((!done.IsCompleted || await FalseWakeUpAsync()) && run.Execution is null)
            {
                // Nobody waits here for a run answered 202; a waiting client is answered 202 once the shutdown grace ran out.
                if (admission.Draining && (run.Detached || _abort.IsCancellationRequested))
                    return LeftToTheQueue(run, claimed: true);
                await Task.WhenAny(done, Task.Delay(Poll));
                if (!done.IsCompleted && run.Execution is null
                    && await RowStateAsync() is not ("queued" or "claimed"))
                    break;
            }
            if (run.Execution is { } local)
                return await local;
            run.Phases.EndedElsewhere();
            var events = await WhileStoreAwayAsync(run, budget, async token =>
            {
                await using var session = store.QuerySession();
                return await session.Events.FetchStreamAsync(runId, token: token);
            });
            run.Phases.ReadBack();
            lock (run.Events)
            {
                run.Events.Clear();
                run.Events.AddRange(events.Select(e => e.Data));
            }
            // Another node executed it: this node's feed ends the run for its stream subscribers (that node counted it).
            feed.RecordedElsewhere(runId, events);
            return run.Summary;
        }
        catch (StoreAwayException e)
        {
            // Not refunded and not refused: the run is queued or executes; the client has its id and reads the record later.
            LogOutcomeUnread(e.InnerException, runId);
            return run.Summary with
            {
                Status = claimed ? RunStatus.Running : RunStatus.Pending,
                FailureReason = (claimed
                    ? "The run was handed to an executor and executes, but "
                    : "The run is recorded and queued for an executor (one may already run it), but ")
                    + "the audit store was unavailable while this request waited, so its outcome could not be read. Do not send it "
                    + "again: GET this run's Location for its record.",
            };
        }
        finally
        {
            _waiting.TryRemove(runId, out _);
            signals.Forget(runId);
        }
    }

    /// <summary>
    /// A draining node stops waiting for a run it recorded: the run stays in the queue (claimed: an executor runs it) and ends
    /// there. A client still waiting gets its id (202, Location) and why, never a refusal of a run that may still succeed.
    /// </summary>
    private static RunSummary LeftToTheQueue(AdmittedRun run, bool claimed) => run.Summary with
    {
        Status = claimed ? RunStatus.Running : RunStatus.Pending,
        FailureReason = "This api node is shutting down and stopped waiting for the run. The run is recorded and "
            + (claimed ? "an executor runs it" : "stays queued for any executor")
            + "; do not send it again: GET this run's Location for its outcome.",
    };

    private static readonly TimeSpan Poll = TimeSpan.FromSeconds(1);

    // Reads of a waiting api node while PostgreSQL is briefly away: retried until the run's wait budget is spent.
    private static readonly ResiliencePipeline WhileStoreAway = new ResiliencePipelineBuilder()
        .AddRetry(new RetryStrategyOptions
        {
            ShouldHandle = new PredicateBuilder().Handle<Exception>(ProblemExceptionHandler.IsStoreUnavailable),
            MaxRetryAttempts = int.MaxValue,
            BackoffType = DelayBackoffType.Exponential,
            Delay = TimeSpan.FromMilliseconds(100),
            MaxDelay = Poll,
            UseJitter = true,
        })
        .Build();

    /// <summary>One read of the waiting api side; StoreAwayException once the store stayed away beyond the run's wait budget.</summary>
    private static async Task<T> WhileStoreAwayAsync<T>(AdmittedRun run, TimeSpan budget, Func<CancellationToken, ValueTask<T>> read)
    {
        var left = budget - run.Clock.Elapsed;
        using var spent = new CancellationTokenSource(left > TimeSpan.Zero ? left : TimeSpan.FromMilliseconds(1));
        try
        {
            // At least one attempt, even past the budget: only a failing read ends the wait.
            return left > TimeSpan.Zero ? await WhileStoreAway.ExecuteAsync(read, spent.Token) : await read(CancellationToken.None);
        }
        catch (Exception e) when (ProblemExceptionHandler.IsStoreUnavailable(e) || (e is OperationCanceledException && spent.IsCancellationRequested))
        {
            throw new StoreAwayException(e);
        }
    }

    private sealed class StoreAwayException(Exception inner) : Exception(inner.Message, inner);

    /// <summary>
    /// The executor side: runs a run this node claimed from the queue. A run this node recorded itself is run as that very
    /// object (its waiter answers from it); one from another api node is rebuilt from its work order and the evidence store.
    /// </summary>
    public async Task ExecuteClaimedAsync(ClaimedRun claimed, Admission.Slot slot)
    {
        var work = claimed.Work;
        slot.CountTenant(claimed.Tenant);
        if (_waiting.TryGetValue(work.RunId, out var local))
        {
            local.Slot = slot;
            var execution = Track(work.RunId, ExecuteCoreAsync(local, _abort.Token));
            local.Execution = execution;
            signals.Done(work.RunId);
            await execution.ContinueWith(_ => { }, TaskScheduler.Default);
            return;
        }
        AdmittedRun run;
        try
        {
            _abort.Token.ThrowIfCancellationRequested();
            // The stream's tail and the inputs are two reads on two connections: read at once, not one after the other.
            var resuming = RunStream.ResumeAsync(store, work.RunId, new WriteContext(work.Caller.Subject, work.CorrelationId, Tenant: work.Caller.Tenant), _abort.Token);
            var reading = RequestOfAsync(work, _abort.Token);
            await Task.WhenAll(resuming, reading);
            run = new AdmittedRun(await resuming, await reading, work.Decision, work.Caller, Stopwatch.StartNew(), [])
            {
                ImageId = work.ImageId, Slot = slot, Queued = true, Remote = true,
            };
        }
        catch (OperationCanceledException) when (_abort.IsCancellationRequested)
        {
            // Claimed as shutdown's grace ran out: nothing of it started here, so it goes back to the queue for another
            // executor (or this node once restarted) rather than being recorded failed for a reason that is not true.
            slot.Dispose();
            try
            {
                if (await queue.ReturnAsync(work.RunId, executorOptions.Value.NodeId, CancellationToken.None))
                    LogClaimReturned(work.RunId);
            }
            catch (Exception e)
            {
                LogClaimNotReturned(e, work.RunId); // its lease lapses: the sweeper records it abandoned, naming this node
            }
            return;
        }
        catch (Exception e)
        {
            // The inputs are gone (erased) or the store is away: the run ends failed, with its row, if that can be recorded.
            slot.Dispose();
            LogClaimedUnreadable(e, work.RunId);
            var stream = await RunStream.ResumeAsync(store, work.RunId, new WriteContext(work.Caller.Subject, work.CorrelationId, Tenant: work.Caller.Tenant), CancellationToken.None);
            await stream.AppendAsync(RunDecisions.InputsUnreadable(work.RunId, e.Message, clock.GetUtcNow()),
                CancellationToken.None, session => queue.Finish(session, work.RunId));
            return;
        }
        await Track(work.RunId, ExecuteCoreAsync(run, _abort.Token)).ContinueWith(_ => { }, TaskScheduler.Default);
    }

    /// <summary>The validated request again, its inputs read from the tenant's evidence store by digest.</summary>
    private async Task<ValidRunRequest> RequestOfAsync(RunWork work, CancellationToken ct)
    {
        var tenant = work.Caller.Tenant;
        var r = work.Request;
        var whole = await evidence.ReadWholeAsync(tenant, [r.CodeSha256, r.StdinSha256], ct);
        byte[] Read(string sha) => whole[sha] ?? throw new InvalidDataException($"Input {sha} is not in the evidence store.");
        var code = Encoding.UTF8.GetString(Read(r.CodeSha256));
        var stdin = Read(r.StdinSha256);
        var files = r.Files.Select(f => new InputFile(f.Name, f.Bytes, f.Sha256, async token =>
            await evidence.OpenAsync(tenant, f.Sha256, token) ?? throw new InvalidDataException($"Input file '{f.Name}' is not in the evidence store."))).ToList();
        return new ValidRunRequest(r.Language, code, stdin, r.Args, files, r.Limits, r.Classification, r.Runtime, r.Isolation);
    }

    private async Task<RunSummary> ExecuteCoreAsync(AdmittedRun run, CancellationToken ct)
    {
        var runId = run.Stream.RunId;
        RunOutputs? outputs = null;

        using (run.Slot)
        {
            PreparedSandbox sandbox;
            try
            {
                sandbox = (run.Warm is { } warm ? await warm : null) ?? await pool.AcquireAsync(ProfileOf(run.Decision, run.Request, run.ImageId), runId, ct);
                run.Phases.SandboxReady();
                feed.Running(runId, sandbox.ContainerId);
                if (run.Remote)
                    relay.Running(runId, sandbox.ContainerId);
            }
            catch (SandboxStartException e)
            {
                // The engine created a container for this run: it is named in the record, with how its removal ended.
                LogSandboxUnavailable(e, runId);
                var c = e.Container;
                await CommitOrKeepAsync(run, RunDecisions.SandboxNotReady(runId, executorOptions.Value.NodeId,
                    new SandboxFacts(c.ContainerId, c.Image, c.ImageId, false, c.CreatedAt, c.Settings), e.Message, e.Removal, clock.GetUtcNow()));
                throw new SandboxUnavailableException(runId, e);
            }
            catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
            {
                LogSandboxUnavailable(e, runId);
                await CommitOrKeepAsync(run, RunDecisions.NoSandbox(runId, e.Message, clock.GetUtcNow()));
                throw new SandboxUnavailableException(runId, e);
            }

            // Which sandbox serves the run is recorded while the code runs, so that a crash mid-run leaves the container
            // in the history; a run that ends within AnnounceAfter records it with its outcome instead (one commit, not two
            // competing for the same 2 cores). Should the announcing commit fail, the facts go with the outcome too.
            // Recorded once per image and then cached: the first run of a new image pays for its record, later ones do not.
            var image = await images.TryRecordedAsync(sandbox.Profile.Runtime, sandbox.ImageId, CancellationToken.None);
            var sandboxEvents = RunDecisions.SandboxStarted(runId, executorOptions.Value.NodeId, Facts(sandbox, image), sandbox.StartedAt, clock.GetUtcNow());
            var produced = new long[2];
            using var relayed = run.Remote ? relay.Open(runId, sandbox.ContainerId) : null; // kept for catch-ups of followers until the outcome is recorded
            var execution = runner.RunAsync(sandbox, run.Request, run.Decision.Limits, run.Remote
                ? chunk =>
                {
                    var index = chunk.Stream == OutputStream.Stdout ? 0 : 1;
                    relay.Output(runId, chunk, produced[index]);
                    produced[index] += chunk.Bytes.Length;
                }
                : chunk => feed.Output(runId, chunk), ct);
            var announced = AnnounceUnlessFinishedAsync(run, sandboxEvents, execution, ct);
            List<object> outcomeEvents;
            SandboxOutcome? collected = null;
            try
            {
                var outcome = collected = await execution;
                run.Phases.Exited();
                var kept = await artifacts.StoreAsync(run.Caller.Tenant, runId, executorOptions.Value.NodeId, outcome.Artifacts, CancellationToken.None);
                var stored = await StoreOutputsAsync(run, outcome);
                outcomeEvents = [.. RunDecisions.Outcome(runId, outcome.Exit, outcome.StdoutTruncated || outcome.StderrTruncated, stored.Stdout, stored.Stderr,
                    kept, outcome.Problem, run.Clock.ElapsedMilliseconds, clock.GetUtcNow(), stored.Refused)];
                outputs = stored; // set only once the outcome events name them: a SandboxFailed stages nothing
            }
            catch (Exception e)
            {
                LogRunFailed(e, runId);
                outcomeEvents = [.. RunDecisions.SandboxFailed(runId, e.Message, e is OperationCanceledException, clock.GetUtcNow())];
            }
            try
            {
                var pending = await announced ? [] : sandboxEvents;
                // Outputs that fit one chunk commit with the events that name them; should that commit fail, the journal keeps
                // them with the events, and its worker stages them again with the commit that records them.
                await CommitOrKeepAsync(run, [.. pending, .. outcomeEvents], staged: outputs?.Staged, journalOnly: outputs?.Unstored is { Count: > 0 } ? JournaledOutputAway : null,
                    spooled: outputs?.Unstored);
                run.Phases.Committed();
            }
            finally
            {
                collected?.DeleteSpool();
                pool.Replenish();
                TrackRemoval(sandbox.ContainerId, RemoveAsync(run, sandbox.ContainerId));
            }
        }
        var summary = run.Recording ? Recording(run) : run.Summary;
        // Small outputs answer from memory: the request that ran them need not read back what it just stored (nor can it,
        // while the store is away and the outcome waits in the journal).
        return outputs is { Answer: var (stdout, stderr) } && summary.Output is { } recorded
            ? summary with { Output = recorded with { Stdout = stdout ?? recorded.Stdout, Stderr = stderr ?? recorded.Stderr } }
            : summary;
    }

    /// <summary>
    /// Commits events that end a run; if the commit fails, keeps them in the node's journal (fsynced) for the journal worker
    /// to commit when the store takes them: an outage, a read-only store during a failover, a timeout, a permission taken away,
    /// the run's stream moved on meanwhile. Only when the disk fails too does the failure reach the client. A store that
    /// refuses the events' data (StoreRefusals.IsPermanent: the journal worker would set them aside for good) ends the run
    /// failed instead, saying why.
    /// </summary>
    /// <remarks>
    /// staged: contents that commit with the events (outputs they name by digest); the journal keeps them with the events.
    /// journalOnly: why the events go to the journal without a commit (the evidence store was away for an output they name:
    /// the journal's worker stores it before it commits them, since a record naming an output the store does not have would
    /// be committed otherwise).
    /// </remarks>
    private async Task CommitOrKeepAsync(AdmittedRun run, IReadOnlyList<object> events, string? part = null, ReadOnlyMemory<byte>[]? staged = null,
        string? journalOnly = null, IReadOnlyList<KeptContent>? spooled = null)
    {
        var why = journalOnly;
        if (!run.Recording && why is null)
        {
            try
            {
                // After the terminal event the live feed has closed the run: a later removal is recorded, not broadcast.
                if (part is null)
                    await AppendAsync(run, events, CancellationToken.None, staged);
                else
                    await run.Stream.AppendAsync(events, CancellationToken.None);
                return;
            }
            catch (Exception e) when (part is null && events.Any(IsTerminal) && OutcomeJournal.PermanentRefusal(e) is { } sqlState)
            {
                LogOutcomeRefused(e, run.Stream.RunId);
                await RecordRefusedAsync(run, events, staged, spooled, sqlState);
                return;
            }
            catch (Exception e) when (OutcomeJournal.PermanentRefusal(e) is null)
            {
                LogOutcomeJournaled(e, run.Stream.RunId);
                why = WhyJournaled(e);
            }
        }
        await KeepAsync(run, events, part, staged, why, spooled);
    }

    private async Task KeepAsync(AdmittedRun run, IReadOnlyList<object> events, string? part, ReadOnlyMemory<byte>[]? staged, string? why,
        IReadOnlyList<KeptContent>? spooled = null)
    {
        await journal.KeepAsync(run.Stream, events, run.Recording ? part : null, staged, spooled);
        if (part is null)
        {
            run.Recording = true;
            run.RecordingWhy ??= why;
        }
        lock (run.Events)
            run.Events.AddRange(events);
    }

    /// <summary>
    /// The store refused a run's ending events for their data (for good): the run ends with a RunFailed that says what it had
    /// ended with and why that is not recorded (the SQLSTATE only; PostgreSQL's text is logged here). Should that account
    /// fail for a passing reason, it waits in the journal like any outcome; should it be refused for its data too, the
    /// original outcome is kept in the journal (set aside there for the operator, never dropped) and the run is recorded
    /// abandoned once its lease lapses.
    /// </summary>
    private async Task RecordRefusedAsync(AdmittedRun run, IReadOnlyList<object> refused, ReadOnlyMemory<byte>[]? staged,
        IReadOnlyList<KeptContent>? spooled, string sqlState)
    {
        var code = StoreRefusals.Code(sqlState);
        // The store may have refused only the ending: the exit and outputs are tried with the RunFailed first.
        if (RunDecisions.OutcomeRefusedKeepingFacts(run.Stream.RunId, refused, code, clock.GetUtcNow()) is { Length: > 0 } withFacts)
        {
            try
            {
                await AppendAsync(run, withFacts, CancellationToken.None, staged);
                return;
            }
            catch (Exception again) when (OutcomeJournal.PermanentRefusal(again) is null)
            {
                LogOutcomeJournaled(again, run.Stream.RunId);
                await KeepAsync(run, withFacts, null, staged, WhyJournaled(again), spooled);
                return;
            }
            catch (Exception again)
            {
                LogFactsRefused(again, run.Stream.RunId);
            }
        }
        var failed = RunDecisions.OutcomeRefused(run.Stream.RunId, refused, code, clock.GetUtcNow());
        try
        {
            await AppendAsync(run, failed, CancellationToken.None);
        }
        catch (Exception again) when (OutcomeJournal.PermanentRefusal(again) is null)
        {
            LogOutcomeJournaled(again, run.Stream.RunId);
            await KeepAsync(run, failed, null, null, WhyJournaled(again));
        }
        catch (Exception again)
        {
            LogOutcomeUnrecorded(again, run.Stream.RunId);
            await KeepAsync(run, refused, null, staged, JournaledRefused, spooled);
        }
    }

    private static bool IsTerminal(object e) => EventCatalog.Terminal.Contains(EventCatalog.NameOf(e));

    // Why an outcome whose commit failed (not for its data) went to the journal: fixed wording, never the store's own text.
    private static string WhyJournaled(Exception e) =>
        RunStream.IsConflict(e) ? JournaledConflict : ProblemExceptionHandler.IsStoreUnavailable(e) ? JournaledAuditAway : JournaledAuditRefusing;

    // Why an outcome went to the journal, as its "recording" answer says it.
    internal const string JournaledAuditAway = "the audit store (PostgreSQL) is unavailable";
    internal const string JournaledAuditRefusing = "the audit store (PostgreSQL) does not take writes right now (read-only, timed out or not permitted)";
    internal const string JournaledRefused = "the audit store refused both the outcome and the account of that refusal for their data; the outcome is kept on this node for the operator";
    internal const string JournaledOutputAway = "the evidence store (PostgreSQL) could not take its output when it was to be stored, so the output waits on this node with it";
    internal const string JournaledConflict = "the run's record changed while it ran (another node may have recorded it abandoned), and the journal reconciles the two";

    /// <summary>The run's view while its outcome waits in this node's journal: status "recording", and a reason that says why and what to do.</summary>
    private static RunSummary Recording(AdmittedRun run)
    {
        var summary = run.Summary;
        return summary with
        {
            Status = RunStatus.Recording,
            FailureReason = $"The run finished, but its record is not committed yet: {run.RecordingWhy ?? JournaledAuditAway}. The outcome is kept on "
                + "this node and committed when the store takes it; GET this run's Location for the committed record."
                + (summary.FailureReason is { } reason ? " " + reason : ""),
        };
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

    private static SandboxFacts Facts(PreparedSandbox sandbox, RuntimeImageRecorded? image) =>
        new(sandbox.ContainerId, sandbox.Image, sandbox.ImageId, sandbox.FromPool, sandbox.CreatedAt, sandbox.Settings, sandbox.Profile.Runtime,
            sandbox.Profile.Isolation, image?.LayerDigest, image?.SbomDigest);

    // Removal happens after the client has its answer; SandboxRemoved therefore follows the terminal event, and only once the
    // engine confirmed (or answered that the container is gone). A removal that keeps failing is left to the reaper, which records it.
    private async Task RemoveAsync(AdmittedRun run, string containerId)
    {
        var how = await factory.DestroyAsync(containerId, CancellationToken.None);
        if (how is null)
            return;
        try
        {
            await CommitOrKeepAsync(run, RunDecisions.Removed(run.Stream.RunId, containerId, how, clock.GetUtcNow()), "removed");
        }
        catch (Exception e)
        {
            LogRemovalNotRecorded(e, run.Stream.RunId);
        }
    }

    private async Task AppendAsync(AdmittedRun run, IReadOnlyList<object> events, CancellationToken ct, ReadOnlyMemory<byte>[]? staged = null)
    {
        // The terminal event ends the run's queue row in the same commit, and tells the waiting api node.
        var runId = run.Stream.RunId;
        var finishes = run.Queued && events.Any(e => EventCatalog.Terminal.Contains(EventCatalog.NameOf(e)));
        await RecordAsync(run.Stream, events, ct, session =>
        {
            if (staged is not null)
                EvidenceStore.Stage(session, run.Caller.Tenant, staged);
            if (finishes)
                queue.Finish(session, runId, notify: run.Remote);
        });
        if (run.Remote)
            relay.Recorded(runId, run.Stream.Version);
        lock (run.Events)
            run.Events.AddRange(events);
    }

    /// <summary>Commits events to the run's stream, then tells the live feed (stream subscribers, metrics).</summary>
    private async Task RecordAsync(RunStream stream, IReadOnlyList<object> events, CancellationToken ct, Action<IDocumentSession>? alongside = null)
    {
        await stream.AppendAsync(events, ct, alongside);
        feed.Recorded(stream.RunId, stream.Version - events.Count + 1, events);
    }

    /// <summary>
    /// A run's two output streams as its record names them (Stdout, Stderr: by digest and size). Staged: the bytes that commit
    /// with the outcome events (outputs that fit one chunk each, most runs: in no round trip of their own); null when they
    /// were streamed into the store beforehand. Unstored: outputs the store was away for when they were streamed into it;
    /// the outcome goes to the node's journal, which copies them from their capture to disk beside it (never whole in
    /// memory) and stores them before it commits the events that name them.
    /// Refused: why an output could not be kept when the store refused it for another reason (the run then ends failed).
    /// Answer: each output small enough to answer from memory (null: read from the store, or "unavailable" while recording).
    /// </summary>
    private sealed record RunOutputs(StreamOutput Stdout, StreamOutput Stderr, ReadOnlyMemory<byte>[]? Staged, IReadOnlyList<KeptContent>? Unstored,
        (StreamOutput? Stdout, StreamOutput? Stderr) Answer, string? Refused = null);

    // Outputs up to this size each are answered from memory to the request that ran them (the store reads whole ones this size too).
    private const int AnsweredFromMemoryBytes = 64 * 1024;

    private static StreamOutput? AnswerOf(byte[]? bytes, long produced, bool truncated) =>
        bytes is not null && bytes.Length <= AnsweredFromMemoryBytes ? Describe(bytes, produced, truncated) : null;

    /// <summary>
    /// Stores both output streams: when both are in memory and fit one chunk each (most runs), with the outcome commit;
    /// otherwise each streamed from its capture now.
    /// </summary>
    private async Task<RunOutputs> StoreOutputsAsync(AdmittedRun run, SandboxOutcome outcome)
    {
        var stdoutProduced = Math.Max(outcome.Exit.StdoutProduced, outcome.Stdout.Length);
        var stderrProduced = Math.Max(outcome.Exit.StderrProduced, outcome.Stderr.Length);
        if (outcome.Stdout.Spilled || outcome.Stderr.Spilled || outcome.Stdout.Length > EvidenceStore.ChunkSize || outcome.Stderr.Length > EvidenceStore.ChunkSize)
        {
            var stdout = await StoreOutputAsync(run, outcome.Stdout, stdoutProduced, outcome.StdoutTruncated, "stdout");
            var stderr = await StoreOutputAsync(run, outcome.Stderr, stderrProduced, outcome.StderrTruncated, "stderr");
            // Each output within the answered size is answered from its capture, whether or not the other one spilled.
            var answer = (AnswerOf(await SmallAsync(outcome.Stdout), stdoutProduced, outcome.StdoutTruncated),
                AnswerOf(await SmallAsync(outcome.Stderr), stderrProduced, outcome.StderrTruncated));
            if ((stdout.Refused ?? stderr.Refused) is { } refused)
                return new(stdout.Output, stderr.Output, null, null, answer, refused); // nothing goes to the journal: the run ends failed
            KeptContent[] kept = [.. new[] { stdout.Unstored, stderr.Unstored }.OfType<KeptContent>()];
            return new(stdout.Output, stderr.Output, null, kept.Length > 0 ? kept : null, answer);
        }
        var stdoutBytes = await outcome.Stdout.ToArrayAsync(CancellationToken.None);
        var stderrBytes = await outcome.Stderr.ToArrayAsync(CancellationToken.None);
        return new(StreamOutput.InStore(outcome.Stdout.Sha256, stdoutBytes.Length, stdoutProduced, outcome.StdoutTruncated),
            StreamOutput.InStore(outcome.Stderr.Sha256, stderrBytes.Length, stderrProduced, outcome.StderrTruncated),
            [stdoutBytes, stderrBytes], null,
            (AnswerOf(stdoutBytes, stdoutProduced, outcome.StdoutTruncated), AnswerOf(stderrBytes, stderrProduced, outcome.StderrTruncated)));
    }

    /// <summary>An output's bytes when it is small enough to be answered from memory (at most 64 KiB, from memory or its spool); else null.</summary>
    private static async Task<byte[]?> SmallAsync(CapturedOutput output) =>
        output.Length <= AnsweredFromMemoryBytes ? await output.ToArrayAsync(CancellationToken.None) : null;

    /// <summary>
    /// Stores an output stream in the evidence store straight from its capture (memory, then its spool file: never copied
    /// whole) and names it by digest and size. When the store cannot take it (away, read-only, timed out, not permitted), it is
    /// returned to go with the outcome into the node's journal, which copies it from its capture to a file of its own (never
    /// inside the event: the record names outputs by digest only, so that erasure reaches them). When the store refuses its
    /// data (StoreRefusals.IsPermanent), or this node cannot read its capture or it no longer hashes to the digest taken while
    /// it was captured, Refused says why in fixed words (a SQLSTATE at most, no path): waiting in the journal would not help.
    /// </summary>
    private async Task<(StreamOutput Output, KeptContent? Unstored, string? Refused)> StoreOutputAsync(AdmittedRun run, CapturedOutput output, long produced,
        bool truncated, string name)
    {
        var named = StreamOutput.InStore(output.Sha256, output.Length, produced, truncated);
        try
        {
            await using var content = await output.OpenReadAsync(CancellationToken.None);
            await evidence.PutAsync(run.Caller.Tenant, new StoredContent(output.Sha256, output.Length), content,
                new ContentHold(run.Stream.RunId, executorOptions.Value.NodeId), CancellationToken.None);
            return (named, null, null);
        }
        catch (Exception e) when (IsNodeLocal(e))
        {
            LogCaptureUnreadable(e, run.Stream.RunId, name);
            return (named, null, CaptureUnreadable(name));
        }
        catch (Exception e) when (OutcomeJournal.PermanentRefusal(e) is { } sqlState)
        {
            LogOutputRefused(e, run.Stream.RunId, name);
            return (named, null, $"the evidence store refused its {name} ({StoreRefusals.Code(sqlState)})");
        }
        catch (Exception e)
        {
            LogOutputUnstored(e, run.Stream.RunId);
        }
        // The journal keeps only bytes that are what the event names (hashed as they are read, never held whole).
        try
        {
            await using var content = await output.OpenReadAsync(CancellationToken.None);
            if (Convert.ToHexStringLower(await System.Security.Cryptography.SHA256.HashDataAsync(content)) != output.Sha256)
                return (named, null, $"its {name} no longer hashes to the digest taken while it was captured (its spool changed)");
        }
        catch (Exception e) when (IsNodeLocal(e))
        {
            LogCaptureUnreadable(e, run.Stream.RunId, name);
            return (named, null, CaptureUnreadable(name));
        }
        return (named, new KeptContent(output.Sha256, output.Length, output.OpenReadAsync), null);
    }

    // The node's own capture (its spool file) could not be read: not the store's fault; no path is told.
    private static string CaptureUnreadable(string name) => $"the node could not read its capture of {name}";

    // A file-system error of this node (its spool), not one the store's client raised (Npgsql wraps its socket's I/O errors).
    private static bool IsNodeLocal(Exception e)
    {
        if (e is not (IOException or UnauthorizedAccessException))
            return false;
        for (Exception? inner = e; inner is not null; inner = inner.InnerException)
            if (inner is Npgsql.NpgsqlException)
                return false;
        return true;
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

    [LoggerMessage(Level = LogLevel.Warning, Message = "Run {RunId}: claimed as the shutdown grace ran out; returned to the queue unstarted")]
    private partial void LogClaimReturned(Guid runId);

    [LoggerMessage(Level = LogLevel.Error, Message = "Run {RunId}: claimed as the shutdown grace ran out, and could not be returned to the queue; it is recorded abandoned once its lease lapses")]
    private partial void LogClaimNotReturned(Exception e, Guid runId);

    [LoggerMessage(Level = LogLevel.Error, Message = "Run {RunId}: no sandbox could be created")]
    private partial void LogSandboxUnavailable(Exception e, Guid runId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Run {RunId}: recording its sandbox failed; retrying with the outcome")]
    private partial void LogAnnounceFailed(Exception e, Guid runId);

    [LoggerMessage(Level = LogLevel.Error, Message = "Run {RunId}: the sandbox failed")]
    private partial void LogRunFailed(Exception e, Guid runId);

    [LoggerMessage(Level = LogLevel.Error, Message = "Run {RunId}: its outcome could not be committed; kept in the node's journal until the audit store returns")]
    private partial void LogOutcomeJournaled(Exception e, Guid runId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Run {RunId}: the evidence store could not take its output (not for its data); the outcome and the output go to the node's journal")]
    private partial void LogOutputUnstored(Exception e, Guid runId);

    [LoggerMessage(Level = LogLevel.Error, Message = "Run {RunId}: the evidence store refused its {Stream} for its data; the run is recorded failed, naming the output by digest")]
    private partial void LogOutputRefused(Exception e, Guid runId, string stream);

    [LoggerMessage(Level = LogLevel.Error, Message = "Run {RunId}: this node could not read its capture of {Stream}; the run is recorded failed, naming the output by digest")]
    private partial void LogCaptureUnreadable(Exception e, Guid runId, string stream);


    [LoggerMessage(Level = LogLevel.Error, Message = "Run {RunId}: the audit store refused its outcome for its data; recording the run failed, saying why")]
    private partial void LogOutcomeRefused(Exception e, Guid runId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Run {RunId}: the store refused its exit and outputs with the account of the refusal too; "
        + "recording the account alone")]
    private partial void LogFactsRefused(Exception e, Guid runId);

    [LoggerMessage(Level = LogLevel.Critical, Message = "Run {RunId}: the audit store refused its outcome and the account of that refusal for their data; the outcome is kept in the node's journal (set aside for the operator), and the run is recorded abandoned once its lease lapses")]
    private partial void LogOutcomeUnrecorded(Exception e, Guid runId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Run {RunId}: the audit store stayed away while this node waited for the run; answered 202 with its id")]
    private partial void LogOutcomeUnread(Exception? e, Guid runId);

    [LoggerMessage(Level = LogLevel.Error, Message = "Run {RunId}: claimed from the queue, but its record or inputs could not be read")]
    private partial void LogClaimedUnreadable(Exception e, Guid runId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Run {RunId}: SandboxRemoved could not be recorded")]
    private partial void LogRemovalNotRecorded(Exception e, Guid runId);
}

/// <summary>Where a run's time went, marked as it happens; sent back to the client as a Server-Timing header.</summary>
public sealed class RunPhases(Stopwatch clock)
{
    private double _recorded, _sandbox, _exited, _committed, _endedElsewhere, _readBack;

    public void Recorded() => _recorded = clock.Elapsed.TotalMilliseconds;
    public void SandboxReady() => _sandbox = clock.Elapsed.TotalMilliseconds;
    public void Exited() => _exited = clock.Elapsed.TotalMilliseconds;
    public void Committed() => _committed = clock.Elapsed.TotalMilliseconds;
    public void EndedElsewhere() => _endedElsewhere = clock.Elapsed.TotalMilliseconds;
    public void ReadBack() => _readBack = clock.Elapsed.TotalMilliseconds;

    /// <summary>
    /// Each phase's own duration in ms: write-ahead commit, sandbox hand-over, the run itself, outcome commit. A run that
    /// failed on the way names only the phases it finished. A run another node executed has instead the wait for its end
    /// (claim, run and outcome commit there, and the signal back) and the read of its record.
    /// </summary>
    public string ToServerTiming()
    {
        (string Name, double At)[] marks = _endedElsewhere > 0
            ? [("record", _recorded), ("elsewhere", _endedElsewhere), ("read", _readBack)]
            : [("record", _recorded), ("sandbox", _sandbox), ("run", _exited), ("outcome", _committed)];
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


