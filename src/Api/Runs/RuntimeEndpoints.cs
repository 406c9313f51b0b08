using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Executor.Pool;
using Sandbox.Audited.Executor.Sandboxes;

namespace Sandbox.Audited.Api.Runs;

public sealed record RuntimeView(string Language, string Image, string? ImageId, int WarmSandboxes, string? Error);

public static class RuntimeEndpoints
{
    /// <summary>GET /v1/runtimes (any authenticated caller): each language with its image tag, image id and warm pool size.</summary>
    public static void MapRuntimes(this IEndpointRouteBuilder app) =>
        app.MapGet("/v1/runtimes", async (SandboxFactory factory, SandboxPool pool, CancellationToken ct) =>
        {
            var views = new List<RuntimeView>();
            foreach (var language in Languages.All)
            {
                try
                {
                    views.Add(new RuntimeView(language, factory.ImageFor(language), await factory.ImageIdAsync(language, ct), pool.SizeOf(language), null));
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    views.Add(new RuntimeView(language, factory.ImageFor(language), null, pool.SizeOf(language), "image unavailable: " + e.GetBaseException().Message));
                }
            }
            return TypedResults.Ok(views);
        }).RequireAuthorization().WithTags("Runtimes");
}
