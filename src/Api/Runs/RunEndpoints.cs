using System.Text.Json;
using System.Text.Json.Serialization;
using Marten;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Api.Callbacks;
using Sandbox.Audited.Api.Hosting;
using Sandbox.Audited.Api.Idempotency;
using Sandbox.Audited.Api.Policies;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Audit.Trail;
using Sandbox.Audited.Domain.Audit;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Domain.Runtimes;
using Sandbox.Audited.Executor;

namespace Sandbox.Audited.Api.Runs;

public static class RunEndpoints
{
    /// <summary>
    /// Largest JSON body read (it is parsed whole): code (256 KiB) + stdin (1 MiB) + files (about 2 MiB, base64 or text) + JSON
    /// overhead. Larger inputs go as multipart/form-data, which is streamed (RunUpload).
    /// </summary>
    public const long MaxBodyBytes = 4 * 1024 * 1024;

    /// <summary>
    /// Strict at every depth: exact camelCase names, no unknown or repeated members, numbers as JSON numbers. A typo
    /// or a smuggled setting is a 400 naming it, never silently dropped or resolved by "last one wins".
    /// </summary>
    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        PropertyNameCaseInsensitive = false,
        NumberHandling = JsonNumberHandling.Strict,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        AllowDuplicateProperties = false,
        RespectNullableAnnotations = true,
        MaxDepth = 16,
    };

    public static RouteGroupBuilder MapRuns(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/v1/runs").RequireAuthorization().WithTags("Runs");
        group.MapPost("/", CreateRun).RequireRateLimiting(RunRateLimits.Policy).RefundedOnServiceFailure().RefusedWhileDraining();
        group.MapGet("/{id:guid}", GetRun);
        group.MapGet("/{id:guid}/events", GetEvents);
        group.MapGet("/{id:guid}/artifacts", ArtifactEndpoints.List);
        group.MapGet("/{id:guid}/artifacts/{**name}", ArtifactEndpoints.Download);
        return group;
    }

    /// <summary>POST /v1/runs: where a run is admitted. Validation and authorization failures are recorded too.</summary>
    public static async Task<Results<RunAnswer, Accepted<RunView>, ProblemHttpResult>> CreateRun(
        HttpContext http, RunOrchestrator orchestrator, IdempotencyStore idempotency, CallbackSender callbacks, IDocumentStore store, PolicyHost policies,
        RuntimeCatalogue runtimes, EvidenceStore evidence, IOptions<RunInputOptions> inputs, IOptions<ExecutorOptions> executor)
    {
        var caller = http.User.ToCaller();
        var client = RequestClient.Of(http);
        var ct = http.RequestAborted;

        if (string.IsNullOrEmpty(caller.Subject) || string.IsNullOrEmpty(caller.Tenant))
            return Problem(401, Problems.Unauthorized, "Token incomplete", "The token must carry 'sub' and 'tenant' claims.");

        using var upload = RunUpload.Is(http.Request)
            ? await RunUpload.ReadAsync(http.Request, inputs.Value.Limits, executor.Value.SpoolDirectory, ct)
            : null;
        var (body, bodyError, tooLarge, raw) = upload is not null
            ? (upload.Body, upload.Error, upload.TooLarge, upload.Description)
            : await ReadBodyAsync(http.Request, ct);
        if (!Access.MayRun(caller))
        {
            var id = await orchestrator.RejectAsync(caller, client, 403, ["The token lacks the 'runner' role; only runners may start runs."], body?.Language, body?.Code, ct);
            return Problem(403, Problems.Forbidden, "Not allowed to run code", "The token lacks the 'runner' role; only runners may start runs.", id);
        }
        if (body is null)
        {
            var status = tooLarge ? 413 : 400;
            var id = await orchestrator.RejectAsync(caller, client, status, [bodyError!], null, null, ct);
            return Problem(status, tooLarge ? Problems.PayloadTooLarge : Problems.InvalidRequest,
                tooLarge ? "Request body too large" : "Malformed request body", bodyError!, id);
        }

        var (valid, rejection) = RunRequestValidation.Validate(
            new RunRequest(body.Language, body.Code, body.Stdin, body.Args, body.Files, body.Limits, body.Classification, body.Runtime, body.Isolation),
            policies.Active.Ceilings, inputs.Value.Limits, upload?.Files);
        // The catalogue is configuration, not request syntax: checked once the language is known.
        if (valid is not null)
        {
            var (runtime, runtimeError) = runtimes.Resolve(valid.Language, valid.Runtime);
            if (runtimeError is not null)
                (valid, rejection) = (null, new Rejection(RejectionKind.Invalid, [runtimeError]));
            else
                valid = valid with { Runtime = runtime!.Id };
        }
        if (valid is null)
        {
            var status = rejection!.Kind == RejectionKind.TooLarge ? 413 : 400;
            var id = await orchestrator.RejectAsync(caller, client, status, rejection.Errors, body.Language, body.Code, ct);
            return Problem(status, status == 413 ? Problems.PayloadTooLarge : Problems.InvalidRequest,
                status == 413 ? "Request too large" : "Invalid run request", string.Join(" ", rejection.Errors), id, rejection.Errors);
        }

        // Inputs land on the sandbox's /tmp before the program starts: they must fit the tmpfs the policy gives the run.
        if (InputBudget.Problem(valid, policies.Active.Evaluate(RunOrchestrator.PolicyInputOf(caller, valid)).Limits) is { } overBudget)
        {
            var id = await orchestrator.RejectAsync(caller, client, 413, [overBudget], body.Language, body.Code, ct);
            return Problem(413, Problems.PayloadTooLarge, "Inputs do not fit the sandbox", overBudget, id, [overBudget]);
        }

        if (body.CallbackUrl is { } callbackUrl && callbacks.Refuse(caller.Tenant, callbackUrl) is { } refusal)
        {
            var id = await orchestrator.RejectAsync(caller, client, 400, [refusal], body.Language, body.Code, ct);
            return Problem(400, Problems.InvalidRequest, "Callback not allowed", refusal, id, [refusal]);
        }

        // Idempotency-Key: the same key and body find the run they started; nothing runs again.
        var idempotencyKey = client.IdempotencyKey;
        NewClaim? claimed = null;
        if (idempotencyKey is not null)
        {
            if (idempotencyKey.Length > IdempotencyStore.MaxKeyLength)
            {
                var error = $"The Idempotency-Key is longer than {IdempotencyStore.MaxKeyLength} characters.";
                var id = await orchestrator.RejectAsync(caller, client, 400, [error], body.Language, body.Code, ct);
                return Problem(400, Problems.InvalidRequest, "Invalid Idempotency-Key", error, id);
            }
            var claim = await idempotency.ClaimAsync(caller, idempotencyKey, IdempotencyStore.BodyHash(raw), async runId =>
                (await LoadAsync(store, runId, ct)).Status == RunStatus.Refused, ct);
            switch (claim)
            {
                case KeyConflict conflict:
                    var id = await orchestrator.RejectAsync(caller, client, 422, [conflict.Detail], body.Language, body.Code, ct);
                    return Problem(422, Problems.IdempotencyConflict, "Idempotency-Key reused", conflict.Detail, id);
                case ExistingRun existing:
                    http.Response.Headers["Idempotent-Replayed"] = "true";
                    return Replay(await LoadAsync(store, existing.RunId, ct), evidence);
                case NewClaim ours:
                    claimed = ours;
                    break;
            }
        }

        var admit = RequestClock.ElapsedMs(http);
        AdmittedRun admitted;
        try
        {
            admitted = await orchestrator.RequestAsync(caller, client, valid, ct, callbackUrl: body.CallbackUrl, idempotency: claimed);
        }
        catch
        {
            if (claimed is not null)
                await idempotency.ReleaseAsync(caller, claimed);
            throw;
        }
        if (!admitted.Decision.Allowed)
        {
            var denied = Problems.Create(403, Problems.PolicyDenied, "Denied by policy", string.Join(" ", admitted.Decision.Reasons), admitted.Stream.RunId, admitted.Decision.Reasons);
            denied.Extensions["reasons"] = admitted.Decision.Reasons;
            denied.Extensions["ruleIds"] = admitted.Decision.RuleIds;
            denied.Extensions["bundleDigest"] = admitted.Decision.BundleDigest;
            return TypedResults.Problem(denied);
        }

        admitted.Detached = body.Wait == false;
        var execution = orchestrator.ExecuteAsync(admitted);
        upload?.KeepUntil(execution);
        if (body.Wait == false)
        {
            _ = execution.ContinueWith(t => _ = t.Exception, TaskScheduler.Default);
            return TypedResults.Accepted($"/v1/runs/{admitted.Stream.RunId}", RunView.From(admitted.Summary));
        }
        var finished = await execution;
        http.Response.Headers["Server-Timing"] = FormattableString.Invariant($"admit;dur={admit:F1}, ") + admitted.Phases.ToServerTiming();
        if (finished.Status == RunStatus.Recording)
            return RecordingAnswer(http, finished, evidence);
        if (!finished.IsTerminal)
        {
            // Recorded, but not ended here (the audit store was away, or this node is shutting down): the id, never a bare 503.
            http.Response.Headers.RetryAfter = "5";
            return TypedResults.Accepted($"/v1/runs/{finished.RunId}", RunView.From(finished));
        }
        return new RunAnswer(finished, evidence, justRun: true);
    }

    /// <summary>A repeated request answers as the original did: the result when finished, 202 while it runs.</summary>
    private static Results<RunAnswer, Accepted<RunView>, ProblemHttpResult> Replay(RunSummary run, EvidenceStore evidence) => run.Status switch
    {
        RunStatus.Denied => Problem(403, Problems.PolicyDenied, "Denied by policy", string.Join(" ", run.Reasons), run.RunId, run.Reasons),
        _ when !run.IsTerminal => TypedResults.Accepted($"/v1/runs/{run.RunId}", RunView.From(run)),
        _ => new RunAnswer(run, evidence),
    };

    // --- Outcome journal (issue 17): the one answer given before the audit commit. ---

    /// <summary>
    /// The run ran and its outcome is known, but the audit store could not take it: the outcome is kept (fsynced) in this
    /// node's journal and committed when the store returns. 202 with the outcome, status "recording" and Retry-After; GET
    /// /v1/runs/{id} gives the committed record.
    /// </summary>
    private static RunAnswer RecordingAnswer(HttpContext http, RunSummary run, EvidenceStore evidence)
    {
        http.Response.Headers.RetryAfter = "5";
        http.Response.Headers.Location = $"/v1/runs/{run.RunId}";
        return new RunAnswer(run, evidence, StatusCodes.Status202Accepted); // its reason says why the outcome waits (RunOrchestrator.Recording)
    }

    private static async Task<RunSummary> LoadAsync(IDocumentStore store, Guid id, CancellationToken ct)
    {
        await using var session = store.QuerySession();
        var events = await session.Events.FetchStreamAsync(id, token: ct);
        return RunSummary.Fold(id, events.Select(e => e.Data));
    }

    public static async Task<Results<RunAnswer, ProblemHttpResult>> GetRun(Guid id, HttpContext http, IDocumentStore store, OutcomeJournal journal, AccessLog accessLog,
        EvidenceStore evidence, CancellationToken ct)
    {
        await using var session = store.QuerySession();
        var events = await session.Events.FetchStreamAsync(id, token: ct);
        var summary = RunSummary.Fold(id, events.Select(e => e.Data));
        if (events.Count == 0 || !Access.MayRead(http.User.ToCaller(), RunOwner.Of(summary)))
            return NotFound(id);
        if (await RecordReadAsync(http, accessLog, summary, AuditActions.ReadRun, 1) is { } unrecorded)
            return unrecorded;
        if (!summary.IsTerminal && journal.Holds(id))
            summary = summary with { Status = RunStatus.Recording };
        return new RunAnswer(summary, evidence);
    }

    public static async Task<Results<Ok<IReadOnlyList<EventView>>, ProblemHttpResult>> GetEvents(Guid id, HttpContext http, IDocumentStore store, AccessLog accessLog, CancellationToken ct)
    {
        await using var session = store.QuerySession();
        var events = await session.Events.FetchStreamAsync(id, token: ct);
        var summary = RunSummary.Fold(id, events.Select(e => e.Data));
        if (events.Count == 0 || !Access.MayRead(http.User.ToCaller(), RunOwner.Of(summary)))
            return NotFound(id);
        if (await RecordReadAsync(http, accessLog, summary, AuditActions.ReadRunEvents, events.Count) is { } unrecorded)
            return unrecorded;
        IReadOnlyList<EventView> views = events.Select(e => new EventView(e.Sequence, e.Version, e.EventTypeName, e.Timestamp,
            e.GetHeader(ChainHeaders.Hash)?.ToString(), e.GetHeader(ChainHeaders.PrevHash)?.ToString(), e.Data)).ToList();
        return TypedResults.Ok(views);
    }

    /// <summary>
    /// Someone reading another person's run (an auditor or admin of the tenant) reads its code and output: recorded in
    /// the access log like an audit query, before the answer leaves. Reading one's own run is not recorded.
    /// </summary>
    internal static async Task<ProblemHttpResult?> RecordReadAsync(HttpContext http, AccessLog accessLog, RunSummary run, string action, long count)
    {
        var caller = http.User.ToCaller();
        if (Access.IsOwner(caller, RunOwner.Of(run)))
            return null;
        try
        {
            var filter = new Dictionary<string, string>(StringComparer.Ordinal) { ["runId"] = run.RunId.ToString(), ["subject"] = run.Subject ?? "" };
            await accessLog.RecordAsync(caller, action, filter, count, http.Connection.RemoteIpAddress?.ToString(), http.TraceIdentifier, http.RequestAborted);
            return null;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            http.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(RunEndpoints)).LogError(e, "A read of run {RunId} could not be recorded", run.RunId);
            http.Response.Headers.RetryAfter = "5";
            return Problem(503, Problems.AuditUnavailable, "The audit store is unavailable",
                "This read of another person's run could not be recorded in the access log, so the run is withheld. Retry shortly.");
        }
    }

    private static async Task<(RunRequestBody? Body, string? Error, bool TooLarge, byte[] Raw)> ReadBodyAsync(HttpRequest request, CancellationToken ct)
    {
        if (request.ContentLength > MaxBodyBytes)
            return (null, $"The request body is {request.ContentLength} bytes; the maximum is {MaxBodyBytes} bytes.", true, []);
        if (request.ContentType is { } type && !type.StartsWith("application/json", StringComparison.OrdinalIgnoreCase))
            return (null, $"Send the run as JSON (Content-Type: application/json) or as multipart/form-data, not '{ClientText.Echo(type)}'.", false, []);
        using var buffer = new MemoryStream();
        var chunk = new byte[81920];
        int read;
        try
        {
            while ((read = await request.Body.ReadAsync(chunk, ct)) > 0)
            {
                if (buffer.Length + read > MaxBodyBytes)
                    return (null, $"The request body exceeds the maximum of {MaxBodyBytes} bytes.", true, []);
                buffer.Write(chunk, 0, read);
            }
        }
        catch (BadHttpRequestException e) when (!ct.IsCancellationRequested)
        {
            // Kestrel gave up on the body (too slow, cut short): a refusal like any other, recorded.
            return (null, "The request body could not be read: " + e.Message, e.StatusCode == StatusCodes.Status413PayloadTooLarge, []);
        }
        if (buffer.Length == 0)
            return (null, "The request body is empty; send a JSON object with 'language' and 'code'.", false, []);
        var raw = buffer.ToArray();
        try
        {
            var body = JsonSerializer.Deserialize<RunRequestBody>(raw, Json);
            return body is null ? (null, "The request body must be a JSON object.", false, raw) : (body, null, false, raw);
        }
        catch (JsonException e)
        {
            return (null, Describe(e), false, raw);
        }
    }

    // System.Text.Json names the member and its path; the .NET type names it adds mean nothing to a client.
    private static string Describe(JsonException e)
    {
        var at = e.Path is { Length: > 0 } path && path != "$" ? $" at '{ClientText.Echo(path)}'" : "";
        var message = e.Message;
        if (message.Contains("could not be mapped to any .NET member", StringComparison.Ordinal))
            return $"Unknown member{at}: the request accepts only the documented members, spelled exactly (camelCase).";
        if (message.Contains("Duplicate", StringComparison.OrdinalIgnoreCase))
            return $"Duplicate member{at}: each member may appear once.";
        if (message.Contains("doesn't allow null values", StringComparison.Ordinal) || message.Contains("non-nullable", StringComparison.Ordinal))
            return $"Null is not allowed{at}: give a value or leave the member out.";
        // A string that is not Unicode (a lone surrogate escape, bytes that are not UTF-8) fails its conversion too.
        if (e.InnerException is InvalidOperationException inner && inner.Message.Contains("UTF", StringComparison.Ordinal))
            return $"Invalid text{at}: strings must be valid Unicode sent as UTF-8 (no lone surrogate such as \\ud800, no invalid byte sequences).";
        if (message.Contains("could not be converted", StringComparison.Ordinal))
            return $"Wrong type{at}: numbers must be JSON numbers in range (integers where an integer is expected), strings JSON strings.";
        return $"Malformed JSON{at}: {message}";
    }

    internal static ProblemHttpResult Problem(int status, string type, string title, string detail, Guid? runId = null, IReadOnlyList<string>? errors = null) =>
        TypedResults.Problem(Problems.Create(status, type, title, detail, runId, errors));

    internal static ProblemHttpResult NotFound(Guid id) =>
        Problem(404, Problems.NotFound, "Run not found", $"No run {id} is visible to you.");
}
