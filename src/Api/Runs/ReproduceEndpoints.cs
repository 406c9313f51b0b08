using System.Text;
using Marten;
using Microsoft.AspNetCore.Http.HttpResults;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Api.Hosting;
using Sandbox.Audited.Api.Policies;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Executor.Sandboxes;

namespace Sandbox.Audited.Api.Runs;

/// <summary>The answer to a reproduction: the new run, both decisions, the image, and the comparison of outputs.</summary>
public sealed record ReproductionView(
    Guid RunId, Guid ReproducesRunId, string ImageId, DecisionView OriginalDecision, DecisionView Decision,
    ReproductionComparison Comparison, RunView Run);

/// <summary>
/// POST /v1/runs/{id}/reproduce: runs the recorded code, stdin, files, args and limits again on the recorded image, decided
/// by the policy active now, as a new run linked to the original (RunRequested.ReproducesRunId), and compares the outputs.
/// The run's owner or a tenant admin may; auditors read, they do not run.
/// </summary>
public static class ReproduceEndpoints
{
    public const string NotReproducible = "/problems/not-reproducible";

    public static void MapReproduce(this IEndpointRouteBuilder app) =>
        app.MapPost("/v1/runs/{id:guid}/reproduce", Reproduce).RequireAuthorization().RequireRateLimiting(RunRateLimits.Policy).RefundedOnServiceFailure()
            .RefusedWhileDraining()
            .WithTags("Runs");

    public static async Task<Results<Ok<ReproductionView>, Accepted<RunView>, ProblemHttpResult>> Reproduce(
        Guid id, HttpContext http, IDocumentStore store, EvidenceStore evidence, RunOrchestrator orchestrator, SandboxFactory factory)
    {
        var caller = http.User.ToCaller();
        var ct = http.RequestAborted;
        List<object> events;
        await using (var session = store.QuerySession())
            events = (await session.Events.FetchStreamAsync(id, token: ct)).Select(e => e.Data).ToList();
        var original = RunSummary.Fold(id, events);
        if (events.Count == 0 || !Access.MayRead(caller, RunOwner.Of(original)))
            return Problem(404, Problems.NotFound, "Run not found", $"No run {id} is visible to you.");
        if (!Access.MayReproduce(caller, RunOwner.Of(original)))
            return Problem(403, Problems.Forbidden, "Only the run's owner or an admin may reproduce it",
                "Auditors read runs and their evidence; reproducing starts a new run, which only the run's owner or a tenant admin may do.");

        var requested = events.OfType<RunRequested>().FirstOrDefault();
        var evaluated = events.OfType<PolicyEvaluated>().FirstOrDefault();
        var created = events.OfType<SandboxCreated>().LastOrDefault();
        if (requested is null || evaluated is null || created is null || !original.IsTerminal)
            return Problem(409, NotReproducible, "The run cannot be reproduced",
                $"Run {id} never ran to an end in a sandbox (status '{original.Status}'), so there is no image and outcome to reproduce.");
        if (!requested.InputsStored && (requested.StdinBytes > 0 || requested.Files.Count > 0))
            return Problem(409, NotReproducible, "The run's inputs were not kept",
                $"Run {id} was recorded before the evidence store: its stdin and files are known only by digest, so it cannot be reproduced.");
        if (!await factory.ImageExistsAsync(created.ImageId, ct))
            return Problem(409, NotReproducible, "The run's image no longer exists",
                $"Run {id} ran on image {created.ImageId}, which the Docker engine no longer has; it cannot be reproduced on the same image.");

        string code;
        byte[] stdin;
        var files = new List<InputFile>();
        try
        {
            code = requested.Code ?? Encoding.UTF8.GetString(await ReadAsync(evidence, requested.Caller.Tenant, requested.CodeSha256, ct));
            stdin = requested.InputsStored ? await ReadAsync(evidence, requested.Caller.Tenant, requested.StdinSha256, ct) : [];
            foreach (var file in requested.Files)
            {
                // Checked now, streamed from the store when the sandbox gets them: binary-safe, never read whole.
                switch (await evidence.StateAsync(requested.Caller.Tenant, file.Sha256, ct))
                {
                    case ContentState.Erased: throw new ContentErasedException(requested.Caller.Tenant, file.Sha256);
                    case ContentState.Missing: throw new FileNotFoundException($"Content {file.Sha256} is not in the evidence store.");
                }
                var tenant = requested.Caller.Tenant;
                var sha = file.Sha256;
                files.Add(new InputFile(file.Name, file.Bytes, sha, async token => await evidence.OpenAsync(tenant, sha, token)
                    ?? throw new FileNotFoundException($"Content {sha} is not in the evidence store.")));
            }
        }
        catch (Exception e) when (e is ContentErasedException or FileNotFoundException)
        {
            return Problem(409, NotReproducible, "The run's inputs are no longer stored", $"Run {id} cannot be reproduced: {e.Message}");
        }

        // The runtime and isolation the run had (a policy may have made its isolation stronger than asked), never the defaults:
        // a reproduction is recorded under the runtime it runs on, and never runs weaker than the original.
        var request = new ValidRunRequest(requested.Language, code, stdin, requested.Args, files, requested.Limits, requested.Classification,
            created.RuntimeId ?? requested.Runtime, created.Isolation ?? requested.Isolation ?? Domain.Runtimes.Isolation.Standard);
        var admitted = await orchestrator.RequestAsync(caller, RequestClient.Of(http), request, ct, reproduces: id, imageId: created.ImageId);
        var originalDecision = DecisionView.From(PolicyReplay.DecisionOf(evaluated));
        if (!admitted.Decision.Allowed)
        {
            var denied = Problems.Create(403, Problems.PolicyDenied, "The policy active now denies the reproduction",
                string.Join(" ", admitted.Decision.Reasons), admitted.Stream.RunId, admitted.Decision.Reasons);
            denied.Extensions["originalDecision"] = originalDecision;
            return TypedResults.Problem(denied);
        }
        var finished = await orchestrator.ExecuteAsync(admitted);
        // Ran, but its outcome waits in the journal or is not ended here (the store away): the new run's id, never a bare 503,
        // so that the client does not reproduce it again.
        if (finished.Status == RunStatus.Recording || !finished.IsTerminal)
            return Later(http, finished);
        try
        {
        List<ArtifactRecorded> reproducedArtifacts;
        await using (var session = store.QuerySession())
            reproducedArtifacts = (await session.Events.FetchStreamAsync(admitted.Stream.RunId, token: ct)).Select(e => e.Data).OfType<ArtifactRecorded>().ToList();
        var comparison = Reproduction.Compare(original.Output, finished.Output, events.OfType<ArtifactRecorded>().ToList(), reproducedArtifacts);
        return TypedResults.Ok(new ReproductionView(admitted.Stream.RunId, id, created.ImageId, originalDecision,
            DecisionView.From(admitted.Decision), comparison, RunView.From(await finished.WithOutputAsync(evidence, ct))));
    }
        catch (Exception e) when (ProblemExceptionHandler.IsStoreUnavailable(e))
        {
            return Later(http, finished);
        }
    }

    private static Accepted<RunView> Later(HttpContext http, RunSummary run)
    {
        http.Response.Headers.RetryAfter = "5";
        return TypedResults.Accepted($"/v1/runs/{run.RunId}", RunView.From(run));
    }

    private static async Task<byte[]> ReadAsync(EvidenceStore evidence, string tenant, string sha256, CancellationToken ct)
    {
        await using var stream = await evidence.OpenAsync(tenant, sha256, ct)
            ?? throw new FileNotFoundException($"Content {sha256} is not in the evidence store.");
        using var buffer = new MemoryStream();
        await stream.CopyToAsync(buffer, ct);
        return buffer.ToArray();
    }

    private static ProblemHttpResult Problem(int status, string type, string title, string detail) =>
        TypedResults.Problem(Problems.Create(status, type, title, detail));
}
