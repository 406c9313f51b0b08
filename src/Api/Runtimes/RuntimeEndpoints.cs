using System.Net;
using Docker.DotNet;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Sandbox.Audited.Audit.Runtimes;
using Sandbox.Audited.Domain.Runtimes;
using Sandbox.Audited.Executor;
using Sandbox.Audited.Executor.Docker;
using Sandbox.Audited.Executor.Pool;

namespace Sandbox.Audited.Api.Runtimes;

/// <summary>One isolation class of a runtime: whether the engine has its OCI runtime, and how many sandboxes wait warm.</summary>
public sealed record IsolationView(string Name, string OciRuntime, bool Available, int WarmSandboxes);

public sealed record RuntimeView(
    string Id,
    string Language,
    string Description,
    IReadOnlyList<string> Packages,
    IReadOnlyList<IsolationView> Isolation,
    string Image,
    string? ImageId,
    string? LayerDigest,
    long? SizeBytes,
    string? SbomDigest,
    string? Sbom,
    string? Error);

public static partial class RuntimeEndpoints
{
    private const string SpdxJson = "application/spdx+json";

    public static void MapRuntimes(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/v1/runtimes").RequireAuthorization().WithTags("Runtimes");
        group.MapGet("/", List);
        // The SBOM is served as stored (SPDX JSON); declared so that generated clients read it as JSON, not as an empty answer.
        group.MapGet("/{id}/sbom", CurrentSbom).Produces<System.Text.Json.JsonElement>(StatusCodes.Status200OK, SpdxJson);
        group.MapGet("/sboms/{digest}", SbomByDigest).Produces<System.Text.Json.JsonElement>(StatusCodes.Status200OK, SpdxJson);
    }

    /// <summary>GET /v1/runtimes (any authenticated caller): the catalogue with each runtime's current image, its digests and SBOM link.</summary>
    public static async Task<Ok<List<RuntimeView>>> List(
        RuntimeCatalogue catalogue, RuntimeImageRegistry images, DockerEngine docker, SandboxPool pool, IOptions<ExecutorOptions> executor,
        ILoggerFactory loggers, CancellationToken ct)
    {
        IReadOnlyCollection<string> engineRuntimes;
        try
        {
            engineRuntimes = await docker.OciRuntimesAsync(ct);
        }
        catch (Exception) when (!ct.IsCancellationRequested) // an engine call past its deadline is cancelled too
        {
            engineRuntimes = [];
        }
        var views = new List<RuntimeView>();
        foreach (var runtime in catalogue.All)
        {
            var classes = Isolation.All.Select(c => new IsolationView(c, executor.Value.OciRuntimeFor(c),
                engineRuntimes.Contains(executor.Value.OciRuntimeFor(c)), pool.SizeOf(runtime.Id, c))).ToList();
            var image = executor.Value.ImageFor(runtime.Id);
            try
            {
                var recorded = await images.CurrentAsync(runtime, ct);
                views.Add(new RuntimeView(runtime.Id, runtime.Language, runtime.Description, runtime.Packages, classes, image,
                    recorded.ImageId, recorded.LayerDigest, recorded.SizeBytes, recorded.SbomDigest,
                    recorded.SbomDigest is null ? null : $"/v1/runtimes/{runtime.Id}/sbom", null));
            }
            catch (Exception e) when (!ct.IsCancellationRequested)
            {
                LogImageUnavailable(loggers.CreateLogger(typeof(RuntimeEndpoints)), e, runtime.Id);
                views.Add(new RuntimeView(runtime.Id, runtime.Language, runtime.Description, runtime.Packages, classes, image,
                    null, null, null, null, null, "image unavailable: " + Why(e)));
            }
        }
        return TypedResults.Ok(views);
    }

    /// <summary>GET /v1/runtimes/{id}/sbom: the SPDX 2.3 JSON bill of materials of the runtime's current image.</summary>
    public static async Task<Results<ContentHttpResult, ProblemHttpResult>> CurrentSbom(
        string id, RuntimeCatalogue catalogue, RuntimeImageRegistry images, RuntimeImageLog log, HttpContext http, ILoggerFactory loggers, CancellationToken ct)
    {
        if (catalogue.Find(id) is not { } runtime)
            return Problem(404, "Runtime not found", $"No runtime '{id}'; the catalogue has: {string.Join(", ", catalogue.Ids)}.");
        RuntimeImageRecorded recorded;
        try
        {
            recorded = await images.CurrentAsync(runtime, ct);
        }
        catch (Exception e) when (!ct.IsCancellationRequested && !FromDatabase(e)) // the database's failures are answered as everywhere else
        {
            // As every other 503 of the API: the client is told when to ask again; what the engine said stays in the log.
            LogImageUnavailable(loggers.CreateLogger(typeof(RuntimeEndpoints)), e, id);
            http.Response.Headers.RetryAfter = "5";
            return Problem(503, "Runtime image unavailable", $"The image of runtime '{id}' cannot be read now: {Why(e)}. Retry later.");
        }
        if (recorded.SbomDigest is null)
            return Problem(404, "No bill of materials", $"Image {recorded.ImageId} of runtime '{id}' has no recorded SBOM; rebuild it with build-images.sh.");
        return await Sbom(log, recorded.SbomDigest, ct);
    }

    /// <summary>GET /v1/runtimes/sboms/{digest}: any recorded SBOM by the digest an event names (sha256:…, or its bare hex).</summary>
    public static async Task<Results<ContentHttpResult, ProblemHttpResult>> SbomByDigest(string digest, RuntimeImageLog log, CancellationToken ct) =>
        await Sbom(log, SbomDigest(digest), ct);

    /// <summary>Events name an SBOM as sha256:HEX; a client that hashed the document itself has the bare HEX, which names the same one.</summary>
    public static string SbomDigest(string digest)
    {
        var lower = digest.ToLowerInvariant();
        return lower.Length == 64 && lower.All(char.IsAsciiHexDigitLower) ? "sha256:" + lower : lower;
    }

    private static async Task<Results<ContentHttpResult, ProblemHttpResult>> Sbom(RuntimeImageLog log, string digest, CancellationToken ct)
    {
        if (await log.FindSbomAsync(digest, ct) is not { } sbom)
            return Problem(404, "No bill of materials", $"No SBOM is stored under '{digest}'.");
        return TypedResults.Content(sbom.Content, sbom.Format, System.Text.Encoding.UTF8);
    }

    // A fixed reason for clients: the engine's and the database's own texts name sockets, hosts and paths.
    private static string Why(Exception e) => e switch
    {
        DockerApiException { StatusCode: HttpStatusCode.NotFound } => "it is not on this node's container engine (an operator builds it with ./sbx up)",
        _ when FromDatabase(e) => "the audit store is unavailable",
        _ => "the container engine is unavailable",
    };

    // Recording a new image writes to PostgreSQL; everything else here asks the engine (whose socket errors look alike).
    private static bool FromDatabase(Exception? e)
    {
        for (; e is not null; e = e.InnerException)
            if (e is Npgsql.NpgsqlException)
                return true;
        return false;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Runtime {RuntimeId}: its image cannot be read")]
    private static partial void LogImageUnavailable(ILogger logger, Exception e, string runtimeId);

    private static ProblemHttpResult Problem(int status, string title, string detail) =>
        TypedResults.Problem(Problems.Create(status, status == 404 ? Problems.NotFound : Problems.SandboxUnavailable, title, detail));
}
