using System.Globalization;
using Marten;
using Microsoft.AspNetCore.Http.HttpResults;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Audit.Policies;
using Sandbox.Audited.Audit.Trail;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Api.Policies;

public static class PolicyEndpoints
{
    public const string PolicyInvalid = "/problems/policy-invalid";
    public const string NotReplayable = "/problems/not-replayable";

    public static IEndpointRouteBuilder MapPolicies(this IEndpointRouteBuilder app)
    {
        var policies = app.MapGroup("/v1/policies").RequireAuthorization(AuditorOrAdmin).WithTags("Policies");
        policies.MapGet("/", GetActive);
        policies.MapGet("/bundles/{digest}", GetBundle);
        policies.MapPost("/evaluate", Evaluate);
        // The bundle decides every tenant's runs: only an admin of the service tenant may reload it, not a tenant's admin.
        var serviceTenant = app.ServiceProvider.GetRequiredService<Microsoft.Extensions.Options.IOptions<AuthOptions>>().Value.ServiceTenant;
        policies.MapPost("/reload", Reload).RequireAuthorization(p => p.RequireAssertion(c => Access.IsServiceAdmin(c.User.ToCaller(), serviceTenant)));

        app.MapGet("/v1/audit/runs/{id:guid}/replay", Replay).RequireAuthorization(AuditorOrAdmin).WithTags("Policies");
        return app;
    }

    private static void AuditorOrAdmin(Microsoft.AspNetCore.Authorization.AuthorizationPolicyBuilder policy) =>
        policy.RequireAssertion(c => Access.MayAudit(c.User.ToCaller()));

    public static Ok<ActivePolicyView> GetActive(PolicyHost host)
    {
        var (bundle, at, trigger) = host.Current;
        return TypedResults.Ok(new ActivePolicyView(
            bundle.Digest,
            bundle.Files.Select(f => new PolicyFileView(f.Path, f.Sha256)).ToList(),
            bundle.Rules.Select(PolicyRuleView.From).ToList(),
            bundle.Defaults, bundle.Ceilings, at, trigger));
    }

    public static async Task<Results<Ok<StoredBundleView>, ProblemHttpResult>> GetBundle(string digest, PolicyBundleStore bundles, CancellationToken ct)
    {
        var stored = await bundles.FindAsync(digest.ToLowerInvariant(), ct);
        return stored is null
            ? Problem(404, Problems.NotFound, "Bundle not found", $"No policy bundle with digest '{digest}' is stored.")
            : TypedResults.Ok(new StoredBundleView(stored.Digest, stored.Files, stored.FirstSeenAt));
    }

    /// <summary>A dry run: decides the given input and records it nowhere but the access log.</summary>
    public static async Task<Results<Ok<DecisionView>, ProblemHttpResult>> Evaluate(
        EvaluateRequest body, HttpContext http, PolicyHost host, PolicyBundleStore bundles, AccessLog accessLog, CancellationToken ct)
    {
        var caller = http.User.ToCaller();
        var errors = Validate(body, out var language, out var classification);
        if (body.Isolation is { } asked && Domain.Runtimes.Isolation.Canonical(asked) is null)
            errors.Add($"Unknown isolation '{asked}': use one of {string.Join(", ", Domain.Runtimes.Isolation.All)}.");
        if (errors.Count > 0)
            return Problem(400, Problems.InvalidRequest, "Invalid evaluation request", string.Join(" ", errors), errors);

        var bundle = host.Active;
        if (body.Digest is { } digest && digest != bundle.Digest)
        {
            // The digest is the caller's input here, not a recorded one: naming no usable bundle is a bad request.
            var (stored, problem) = await LoadStoredAsync(bundles, digest.ToLowerInvariant(), ct);
            if (problem is not null)
                return Problem(400, Problems.InvalidRequest, "Invalid evaluation request",
                    $"{problem.ProblemDetails.Detail} Leave 'digest' out to evaluate under the active bundle, or give one a recorded decision names.",
                    [$"'digest' {digest} names no usable stored policy bundle."]);
            bundle = stored!;
        }

        var code = body.Code ?? "";
        var input = new PolicyInput(
            new Caller(body.Subject ?? caller.Subject, body.Tenant ?? caller.Tenant, body.Roles ?? caller.Roles),
            language!, classification!, body.Limits ?? RequestedLimits.None, code,
            body.ArgCount ?? 0, body.FileCount ?? 0, body.StdinBytes ?? 0, body.Runtime, body.Isolation);
        var decision = bundle.Evaluate(input);

        // A dry run leaves no run behind; the access log is its only record.
        await accessLog.RecordAsync(caller, "policy.evaluate", new Dictionary<string, string>
        {
            ["bundleDigest"] = decision.BundleDigest,
            ["subject"] = input.Caller.Subject,
            ["tenant"] = input.Caller.Tenant,
            ["language"] = input.Language,
            ["classification"] = input.Classification,
            ["codeSha256"] = Sha256Hex.Of(code),
            ["decision"] = decision.Decision,
        }, 1, http.Connection.RemoteIpAddress?.ToString(), http.TraceIdentifier, ct);
        return TypedResults.Ok(DecisionView.From(decision));
    }

    /// <summary>Re-reads the policy directory now; an invalid bundle is refused and the active one stays.</summary>
    public static async Task<Results<Ok<ReloadView>, ProblemHttpResult>> Reload(HttpContext http, PolicyReloader reloader, CancellationToken ct)
    {
        var result = await reloader.ReloadAsync(PolicyActivations.Admin(http.User.ToCaller().Subject), ct);
        if (result.Outcome == ReloadOutcome.Rejected)
        {
            var errors = result.Errors.Select(e => e.ToString()).ToList();
            var problem = Problems.Create(422, PolicyInvalid, "The policy bundle is invalid",
                $"The bundle was refused ({errors.Count} error(s)); bundle {result.ActiveDigest} stays active.", errors: errors);
            problem.Extensions["activeDigest"] = result.ActiveDigest;
            return TypedResults.Problem(problem);
        }
        return TypedResults.Ok(new ReloadView(result.Outcome.ToString().ToLowerInvariant(), result.ActiveDigest, result.PreviousDigest));
    }

    /// <summary>Re-decides a recorded run with its recorded input under the bundle it was decided with.</summary>
    public static async Task<Results<Ok<ReplayView>, ProblemHttpResult>> Replay(
        Guid id, HttpContext http, IDocumentStore store, PolicyBundleStore bundles, AccessLog accessLog, EvidenceStore evidence, CancellationToken ct)
    {
        var caller = http.User.ToCaller();
        await using var session = store.QuerySession();
        var events = (await session.Events.FetchStreamAsync(id, token: ct)).Select(e => e.Data).ToList();
        var summary = RunSummary.Fold(id, events);
        if (events.Count == 0 || !Access.MayRead(caller, RunOwner.Of(summary)))
            return Problem(404, Problems.NotFound, "Run not found", $"No run {id} is visible to you.");

        var requested = events.OfType<RunRequested>().FirstOrDefault();
        var evaluated = events.OfType<PolicyEvaluated>().FirstOrDefault();
        if (requested is null || evaluated is null)
            return Problem(409, NotReplayable, "The run has no policy decision",
                $"Run {id} was rejected before the policy was consulted, so there is no decision to replay.");

        var (bundle, problem) = await LoadStoredAsync(bundles, evaluated.BundleDigest, ct);
        if (problem is not null)
            return problem;

        var recorded = PolicyReplay.DecisionOf(evaluated);
        string? storedCode = null;
        if (requested.Code is null)
        {
            try
            {
                storedCode = await evidence.ReadPrefixAsync(requested.Caller.Tenant, requested.CodeSha256, checked((int)requested.CodeBytes), ct) is { } code
                    ? System.Text.Encoding.UTF8.GetString(code) : null;
            }
            catch (ContentErasedException)
            {
                storedCode = null;
            }
            if (storedCode is null)
                return Problem(409, NotReplayable, "The run's code is not available",
                    $"The code of run {id} (sha256 {requested.CodeSha256}) was erased from the evidence store, so its decision cannot be replayed.");
        }
        var replayed = bundle!.Evaluate(PolicyReplay.InputOf(requested, storedCode));
        var differences = PolicyReplay.Differences(recorded, replayed);

        await accessLog.RecordAsync(caller, "policy.replay", new Dictionary<string, string>
        {
            ["runId"] = id.ToString(),
            ["bundleDigest"] = evaluated.BundleDigest,
            ["same"] = (differences.Count == 0).ToString(CultureInfo.InvariantCulture),
        }, 1, http.Connection.RemoteIpAddress?.ToString(), http.TraceIdentifier, ct);
        return TypedResults.Ok(new ReplayView(id, evaluated.BundleDigest, DecisionView.From(recorded), DecisionView.From(replayed),
            differences.Count == 0, differences));
    }

    private static async Task<(PolicyBundle? Bundle, ProblemHttpResult? Problem)> LoadStoredAsync(PolicyBundleStore bundles, string digest, CancellationToken ct)
    {
        var stored = await bundles.FindAsync(digest, ct);
        if (stored is null)
            return (null, Problem(409, NotReplayable, "The bundle's content is not stored",
                $"No content is stored for policy bundle {digest} (it was active before bundles were stored)."));
        try
        {
            return (stored.ToBundle(), null);
        }
        catch (Exception e) when (e is PolicyIntegrityException or PolicyLoadException)
        {
            return (null, Problem(409, NotReplayable, "The stored bundle cannot be used", e.Message));
        }
    }

    private static List<string> Validate(EvaluateRequest body, out string? language, out string? classification)
    {
        var errors = new List<string>();
        language = Languages.Canonical(body.Language);
        if (language is null)
            errors.Add($"'language' must be one of {string.Join(", ", Languages.All)}; got '{body.Language}'.");
        classification = string.IsNullOrWhiteSpace(body.Classification)
            ? Classification.Default
            : body.Classification.Trim().ToLowerInvariant();
        if (!Classification.All.Contains(classification))
            errors.Add($"Unknown classification '{body.Classification}': use one of {string.Join(", ", Classification.All)}.");
        // The floors of a run; above the ceiling is allowed here, so that a dry run shows how a policy clamps.
        if (body.Limits is { } l)
            errors.AddRange(LimitFloors.Problems(l, null));
        if (body.ArgCount < 0 || body.FileCount < 0 || body.StdinBytes < 0)
            errors.Add("'argCount', 'fileCount' and 'stdinBytes' must not be negative.");
        if (body.Roles is { } roles && roles.Any(string.IsNullOrWhiteSpace))
            errors.Add("'roles' must not contain empty names.");
        return errors;
    }

    private static ProblemHttpResult Problem(int status, string type, string title, string detail, IReadOnlyList<string>? errors = null) =>
        TypedResults.Problem(Problems.Create(status, type, title, detail, errors: errors));
}
