using Marten;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Http.HttpResults;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Audit.Trail;
using Sandbox.Audited.Domain.Audit;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Api.Runs;

public sealed record ArtifactView(string Name, long Bytes, string? Sha256, string? MediaType, string Status, string? Reason, string? Href);

/// <summary>
/// A run's artifacts: what its program left in /tmp/work/out, as recorded (ArtifactRecorded) and stored (EvidenceStore).
/// Readable by whoever may read the run; another person's read is access-logged like a read of the run itself.
/// </summary>
public static class ArtifactEndpoints
{
    public static async Task<Results<Ok<IReadOnlyList<ArtifactView>>, ProblemHttpResult>> List(
        Guid id, HttpContext http, IDocumentStore store, AccessLog accessLog, CancellationToken ct)
    {
        var (summary, artifacts) = await LoadAsync(store, id, ct);
        if (summary is null || !Access.MayRead(http.User.ToCaller(), RunOwner.Of(summary)))
            return RunEndpoints.NotFound(id);
        if (await RunEndpoints.RecordReadAsync(http, accessLog, summary, AuditActions.ListArtifacts, artifacts.Count) is { } unrecorded)
            return unrecorded;
        IReadOnlyList<ArtifactView> views = artifacts.Select(a => new ArtifactView(a.Name, a.Bytes, a.Sha256, a.MediaType, a.Status, a.Reason,
            a.Status == ArtifactStatus.Stored ? $"/v1/runs/{id}/artifacts/{Href(a.Name)}" : null)).ToList();
        return TypedResults.Ok(views);
    }

    /// <summary>The artifact's bytes, streamed from the store, with its digest (RFC 9530 Repr-Digest) and media type.</summary>
    public static async Task<Results<FileStreamHttpResult, ProblemHttpResult>> Download(
        Guid id, string name, HttpContext http, IDocumentStore store, EvidenceStore evidence, AccessLog accessLog, CancellationToken ct)
    {
        var (summary, artifacts) = await LoadAsync(store, id, ct);
        if (summary is null || !Access.MayRead(http.User.ToCaller(), RunOwner.Of(summary)))
            return RunEndpoints.NotFound(id);
        // Names are matched against the record, never used as paths: "../x" finds nothing.
        name = NameAsSent(http, name);
        var artifact = artifacts.LastOrDefault(a => a.Name == name);
        if (artifact is null)
            return RunEndpoints.Problem(404, Problems.NotFound, "Artifact not found", $"Run {id} has no artifact named '{name}'.", id);
        if (artifact is not { Status: ArtifactStatus.Stored, Sha256: { } sha })
            return RunEndpoints.Problem(404, Problems.NotFound, "Artifact not kept",
                $"'{name}' was {artifact.Status} ({artifact.Reason}); only its record exists.", id);
        if (await RunEndpoints.RecordReadAsync(http, accessLog, summary, AuditActions.ReadArtifact, 1) is { } unrecorded)
            return unrecorded;
        Stream? content;
        try
        {
            content = await evidence.OpenAsync(summary.Tenant!, sha, ct);
        }
        catch (ContentErasedException)
        {
            return RunEndpoints.Problem(410, Problems.NotFound, "Artifact erased",
                $"The content of '{name}' was erased; its digest sha256:{sha} and size remain on record.", id);
        }
        if (content is null)
            return RunEndpoints.Problem(404, Problems.NotFound, "Artifact content missing",
                $"The evidence store holds no content for '{name}' (sha256:{sha}).", id);
        http.Response.Headers["Repr-Digest"] = $"sha-256=:{Convert.ToBase64String(Convert.FromHexString(sha))}:";
        http.Response.Headers.ContentLength = artifact.Bytes;
        http.Response.Headers.XContentTypeOptions = "nosniff";
        var type = artifact.MediaType ?? MediaTypes.Default;
        var fileName = name[(name.LastIndexOf('/') + 1)..];
        // Always a download (Content-Disposition: attachment): active content such as HTML never renders in the service's origin.
        return TypedResults.Stream(content, type, fileName, enableRangeProcessing: false);
    }

    /// <summary>
    /// The name as the client sent it, percent-decoded exactly once. The server's path decodes every escape but %2F, so
    /// "a%252Fb" (a name holding the three characters %2F) and "a%2Fb" (a/b, as generated clients send a name's slashes)
    /// both reach the route as "a%2Fb"; the request target as received tells them apart. The route's value names the
    /// request's last segments (dot segments removed as the server removes them), so those are read from the target.
    /// </summary>
    internal static string NameAsSent(HttpContext http, string routed)
    {
        var target = http.Features.Get<IHttpRequestFeature>()?.RawTarget;
        if (string.IsNullOrEmpty(target))
            return routed;
        var path = target.Split('?', 2)[0];
        if (!path.StartsWith('/') && path.IndexOf("://", StringComparison.Ordinal) is >= 0 and var scheme) // absolute-form
            path = path.IndexOf('/', scheme + 3) is >= 0 and var slash ? path[slash..] : "/";
        var raw = path.Split('/')[1..];
        var segments = new List<string>(raw.Length);
        for (var i = 0; i < raw.Length; i++)
        {
            var segment = Uri.UnescapeDataString(raw[i]);
            if (segment is "." or "..")
            {
                if (segment == ".." && segments.Count > 0)
                    segments.RemoveAt(segments.Count - 1);
                if (i == raw.Length - 1)
                    segments.Add(""); // "/x/." is "/x/"
                continue;
            }
            segments.Add(segment);
        }
        var count = routed.Split('/').Length;
        return segments.Count >= count ? string.Join('/', segments[^count..]) : routed;
    }

    private static string Href(string name) => string.Join('/', name.Split('/').Select(Uri.EscapeDataString));

    private static async Task<(RunSummary? Summary, IReadOnlyList<ArtifactRecorded> Artifacts)> LoadAsync(IDocumentStore store, Guid id, CancellationToken ct)
    {
        await using var session = store.QuerySession();
        var events = await session.Events.FetchStreamAsync(id, token: ct);
        if (events.Count == 0)
            return (null, []);
        var data = events.Select(e => e.Data).ToList();
        return (RunSummary.Fold(id, data), data.OfType<ArtifactRecorded>().ToList());
    }
}
