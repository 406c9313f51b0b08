using System.Formats.Tar;
using System.Security.Cryptography;
using System.Text.Json;
using Marten;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Audit.Policies;
using Sandbox.Audited.Audit.Trail;
using Sandbox.Audited.Domain.Audit;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Api.Runs;

/// <summary>
/// GET /v1/runs/{id}/evidence: one tar archive with everything needed to check a run without the service — its events
/// (export NDJSON), the tenant's erasure events, the stored content its events name (by digest), the policy bundle it was
/// decided under, and manifest.json with every file's SHA-256. Layout: docs/evidence.md; checked by `sbx-verify --bundle`.
/// </summary>
public static class EvidenceBundleEndpoints
{
    public const string Format = "sandbox-audited-evidence/1";
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web) { WriteIndented = true };

    public static void MapEvidenceBundle(this IEndpointRouteBuilder app) =>
        app.MapGet("/v1/runs/{id:guid}/evidence", Get).RequireAuthorization().WithTags("Runs");

    public static async Task<Results<FileStreamHttpResult, ProblemHttpResult>> Get(
        Guid id, HttpContext http, IDocumentStore store, NpgsqlDataSource database, EvidenceStore evidence, AuditExport export,
        PolicyBundleStore bundles, AccessLog accessLog, TimeProvider clock, CancellationToken ct)
    {
        var caller = http.User.ToCaller();
        RunSummary run;
        await using (var session = store.QuerySession())
        {
            var events = await session.Events.FetchStreamAsync(id, token: ct);
            run = RunSummary.Fold(id, events.Select(e => e.Data));
            if (events.Count == 0 || !Access.MayRead(caller, RunOwner.Of(run)) || run.Tenant is null)
                return TypedResults.Problem(Problems.Create(404, Problems.NotFound, "Run not found", $"No run {id} is visible to you."));
        }
        // Whoever reads another person's run evidence is recorded before the archive leaves.
        if (!Access.IsOwner(caller, RunOwner.Of(run)))
            await accessLog.RecordAsync(caller, AuditActions.ReadEvidence, new Dictionary<string, string> { ["runId"] = id.ToString() }, 1,
                http.Connection.RemoteIpAddress?.ToString(), http.TraceIdentifier, ct);

        var tenant = run.Tenant;
        var path = Path.Combine(Path.GetTempPath(), $"sbx-evidence-{Guid.NewGuid():N}.tar");
        var files = new List<object>();
        var contents = new List<object>();
        await using (var archive = new FileStream(path, FileMode.CreateNew, FileAccess.Write))
        await using (var tar = new TarWriter(archive, TarEntryFormat.Pax, leaveOpen: true))
        {
            async Task AddAsync(string name, Func<Stream, Task> write)
            {
                var spool = Path.Combine(Path.GetTempPath(), $"sbx-evidence-{Guid.NewGuid():N}");
                try
                {
                    await using (var file = new FileStream(spool, FileMode.CreateNew, FileAccess.Write))
                        await write(file);
                    string sha;
                    long bytes;
                    await using (var file = File.OpenRead(spool))
                    {
                        sha = Convert.ToHexStringLower(await SHA256.HashDataAsync(file, ct));
                        bytes = file.Length;
                    }
                    await tar.WriteEntryAsync(spool, name, ct);
                    files.Add(new { path = name, sha256 = sha, bytes });
                }
                finally
                {
                    File.Delete(spool);
                }
            }

            await AddAsync("events.ndjson", s => export.WriteStreamAsync(tenant, id, s, ct));
            await AddAsync("erasures.ndjson", s => export.WriteStreamAsync(tenant, EvidenceStreams.For(tenant), s, ct));
            var references = await EvidenceReferences.OfAsync(database, tenant, id, ct);
            foreach (var group in references.GroupBy(r => r.Sha256))
            {
                var state = await evidence.StateAsync(tenant, group.Key, ct);
                contents.Add(new { sha256 = group.Key, roles = group.Select(r => r.Role).ToList(), bytes = group.First().Bytes, state = state.ToString().ToLowerInvariant() });
                if (state != ContentState.Present)
                    continue;
                await AddAsync("content/" + group.Key, async s =>
                {
                    await using var content = (await evidence.OpenAsync(tenant, group.Key, ct))!;
                    await content.CopyToAsync(s, ct);
                });
            }
            if (run.BundleDigest is { } digest && await bundles.FindAsync(digest, ct) is { } bundle)
                foreach (var file in bundle.Files)
                    await AddAsync($"policy/{digest}/{file.Path}", s => s.WriteAsync(System.Text.Encoding.UTF8.GetBytes(file.Content), ct).AsTask());

            var manifest = JsonSerializer.SerializeToUtf8Bytes(new
            {
                format = Format,
                runId = id,
                tenant,
                createdAt = clock.GetUtcNow(),
                policyBundle = run.BundleDigest,
                proofs = "not included: fetch GET /v1/audit/proofs/inclusion and /v1/audit/checkpoints for the events' sequences",
                contents,
                files,
            }, Json);
            var entry = new PaxTarEntry(TarEntryType.RegularFile, "manifest.json") { DataStream = new MemoryStream(manifest) };
            await tar.WriteEntryAsync(entry, ct);
        }
        var result = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 81920, FileOptions.DeleteOnClose | FileOptions.Asynchronous);
        return TypedResults.File(result, "application/x-tar", $"run-{id}-evidence.tar");
    }
}
