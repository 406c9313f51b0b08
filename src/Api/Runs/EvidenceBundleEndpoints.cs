using System.Formats.Tar;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Marten;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;
using Sandbox.Audited.Api.Audit;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Audit.Policies;
using Sandbox.Audited.Audit.Runtimes;
using Sandbox.Audited.Audit.Trail;
using Sandbox.Audited.Domain.Audit;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Api.Runs;

/// <summary>
/// GET /v1/runs/{id}/evidence: one tar archive with everything needed to check a run without the service — its events
/// (export NDJSON), the tenant's erasure events, the stored content its events name (by digest), the policy bundle it was
/// decided under, the runtime's SBOM, the inclusion proof of every event in the tenant's Merkle tree up to a signed
/// checkpoint, the published checkpoint keys, and manifest.json with every file's SHA-256. When no checkpoint covers the
/// run's events yet, one is taken first (as POST /v1/audit/checkpoints does), so that every proof ends at a signed root.
/// Layout: docs/evidence.md; checked by `sbx-verify --bundle`.
/// </summary>
public static class EvidenceBundleEndpoints
{
    public const string Format = "sandbox-audited-evidence/2";

    /// <summary>Who a checkpoint taken for a bundle is recorded as.</summary>
    public const string CheckpointSubject = "system:evidence-bundle";

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web) { WriteIndented = true };

    public static void MapEvidenceBundle(this IEndpointRouteBuilder app) =>
        app.MapGet("/v1/runs/{id:guid}/evidence", Get).RequireAuthorization().WithTags("Runs");

    public static async Task<Results<FileStreamHttpResult, ProblemHttpResult>> Get(
        Guid id, HttpContext http, IDocumentStore store, NpgsqlDataSource database, EvidenceStore evidence, AuditExport export,
        PolicyBundleStore bundles, RuntimeImageLog runtimes, AuditTree tree, AuditCheckpoints checkpoints, CheckpointSigner signer,
        NoteSigner notes, AccessLog accessLog, TimeProvider clock, CancellationToken ct)
    {
        var caller = http.User.ToCaller();
        RunSummary run;
        List<SandboxCreated> sandboxes;
        await using (var session = store.QuerySession())
        {
            var events = await session.Events.FetchStreamAsync(id, token: ct);
            run = RunSummary.Fold(id, events.Select(e => e.Data));
            if (events.Count == 0 || !Access.MayRead(caller, RunOwner.Of(run)) || run.Tenant is null)
                return TypedResults.Problem(Problems.Create(404, Problems.NotFound, "Run not found", $"No run {id} is visible to you."));
            sandboxes = events.Select(e => e.Data).OfType<SandboxCreated>().ToList();
        }
        // Whoever reads another person's run evidence is recorded before the archive leaves.
        if (!Access.IsOwner(caller, RunOwner.Of(run)))
            await accessLog.RecordAsync(caller, AuditActions.ReadEvidence, new Dictionary<string, string> { ["runId"] = id.ToString() }, 1,
                http.Connection.RemoteIpAddress?.ToString(), http.TraceIdentifier, ct);

        var tenant = run.Tenant;
        var path = Path.Combine(Path.GetTempPath(), $"sbx-evidence-{Guid.NewGuid():N}.tar");
        var files = new List<object>();
        var contents = new List<object>();
        var runtime = new List<object>();
        var exported = new HashSet<long>();
        try
        {
            RecordedCheckpoint checkpoint;
            var fresh = false;
            await using (var archive = new FileStream(path, FileMode.CreateNew, FileAccess.Write))
            await using (var tar = new TarWriter(archive, TarEntryFormat.Pax, leaveOpen: true))
            {
                async Task AddAsync(string name, Func<Stream, Task> write, Action<string>? inspect = null)
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
                        inspect?.Invoke(spool);
                        await tar.WriteEntryAsync(spool, name, ct);
                        files.Add(new { path = name, sha256 = sha, bytes });
                    }
                    finally
                    {
                        File.Delete(spool);
                    }
                }
                // The sequences exported, so that the proofs cover exactly the events in the bundle.
                void Sequences(string spool)
                {
                    long line = 0;
                    foreach (var text in File.ReadLines(spool))
                    {
                        line++;
                        if (text.Length > 0)
                            exported.Add(ExportedEvent.Parse(Encoding.UTF8.GetBytes(text), line).Sequence);
                    }
                }
                Task AddJsonAsync<T>(string name, T value) =>
                    AddAsync(name, s => JsonSerializer.SerializeAsync(s, value, Json, ct));

                await AddAsync("events.ndjson", s => export.WriteStreamAsync(tenant, id, s, ct), Sequences);
                await AddAsync("erasures.ndjson", s => export.WriteStreamAsync(tenant, EvidenceStreams.For(tenant), s, ct), Sequences);
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
                        await AddAsync($"policy/{digest}/{file.Path}", s => s.WriteAsync(Encoding.UTF8.GetBytes(file.Content), ct).AsTask());

                foreach (var sandbox in sandboxes.Where(s => s.SbomDigest is not null).DistinctBy(s => s.SbomDigest))
                {
                    var sbomPath = $"sbom/{sandbox.SbomDigest!.Replace("sha256:", "", StringComparison.Ordinal)}.spdx.json";
                    string state;
                    StoredSbom? sbom;
                    try
                    {
                        sbom = await runtimes.FindSbomAsync(sandbox.SbomDigest, ct);
                        state = sbom is null ? "missing" : "present";
                    }
                    catch (SbomIntegrityException)
                    {
                        (sbom, state) = (null, "changed"); // left out: the verifier then says the recorded SBOM is missing
                    }
                    if (sbom is not null)
                        await AddAsync(sbomPath, s => s.WriteAsync(Encoding.UTF8.GetBytes(sbom.Content), ct).AsTask());
                    runtime.Add(new { runtimeId = sandbox.RuntimeId, imageId = sandbox.ImageId, layerDigest = sandbox.LayerDigest, sbomDigest = sandbox.SbomDigest, path = sbomPath, state });
                }

                // Proofs end at a signed root: the latest checkpoint if it covers every exported event, else a fresh one.
                var latest = (await checkpoints.ListAsync(tenant, ct)).LastOrDefault();
                if (latest is null || (exported.Count > 0 && latest.Head.ToSequence < exported.Max()))
                {
                    latest = await checkpoints.CreateAsync(new Caller(CheckpointSubject, tenant, []), http.TraceIdentifier, ct);
                    fresh = true;
                }
                checkpoint = latest;
                var size = checkpoint.Head.TreeSize;
                var leaves = (await tree.LeavesAsync(tenant, null, id, ct))
                    .Concat(await tree.LeavesAsync(tenant, null, EvidenceStreams.For(tenant), ct))
                    .Where(l => l.LeafIndex < size && exported.Contains(l.Sequence)).OrderBy(l => l.Sequence).ToList();
                await AddJsonAsync(EvidenceBundleVerifier.InclusionFile, await AuditEndpoints.InclusionProofsAsync(tree, tenant, leaves, size, ct));
                await AddJsonAsync(EvidenceBundleVerifier.CheckpointFile, CheckpointView.From(tenant, checkpoint));
                if (AuditEndpoints.KeyView(tenant, signer, notes) is { } keys)
                    await AddJsonAsync(EvidenceBundleVerifier.KeysFile, keys);

                var manifest = JsonSerializer.SerializeToUtf8Bytes(new
                {
                    format = Format,
                    runId = id,
                    tenant,
                    createdAt = clock.GetUtcNow(),
                    policyBundle = run.BundleDigest,
                    checkpoint = new
                    {
                        sequence = checkpoint.Sequence, toSequence = checkpoint.Head.ToSequence, treeSize = size,
                        rootHash = checkpoint.Head.RootHash, signedNote = checkpoint.Note is not null, takenForThisBundle = fresh,
                        eventsProven = leaves.Count, noteOrigin = notes.Origin(tenant),
                    },
                    keys = $"{EvidenceBundleVerifier.KeysFile} names the key that signed; it proves nothing by itself: verify with the key you hold (sbx-verify --key)",
                    runtime,
                    contents,
                    files,
                }, Json);
                var entry = new PaxTarEntry(TarEntryType.RegularFile, EvidenceBundleVerifier.Manifest) { DataStream = new MemoryStream(manifest) };
                await tar.WriteEntryAsync(entry, ct);
            }
            var result = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 81920, FileOptions.DeleteOnClose | FileOptions.Asynchronous);
            return TypedResults.File(result, "application/x-tar", $"run-{id}-evidence.tar");
        }
        catch (TimeoutException e)
        {
            File.Delete(path);
            http.Response.Headers.RetryAfter = "5";
            return TypedResults.Problem(Problems.Create(503, Problems.AuditUnavailable, "No checkpoint covers this run yet",
                $"The bundle needs a signed checkpoint over the run's events and none could be taken now ({e.Message}). Retry shortly."));
        }
        catch
        {
            File.Delete(path);
            throw;
        }
    }
}
