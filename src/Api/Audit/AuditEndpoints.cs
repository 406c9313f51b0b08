using System.Globalization;
using Microsoft.AspNetCore.Http.HttpResults;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Audit.Trail;
using Sandbox.Audited.Domain.Audit;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Merkle;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Domain.Startup;

namespace Sandbox.Audited.Api.Audit;

public sealed record AuditPage<T>(IReadOnlyList<T> Items, string? NextCursor);

public sealed record BrokenLinkView(Guid RunId, long Version, long? Sequence, string Reason)
{
    public static BrokenLinkView From(ChainBreak b) => new(b.StreamId, b.Version, b.Sequence, b.Reason);
}

public sealed record CheckpointView(
    long Sequence, string Tenant, long ToSequence, long TreeSize, string RootHash, string? KeyId, string? Signature, string Subject,
    DateTimeOffset At, long? PreviousTreeSize, IReadOnlyList<string>? ConsistencyProof, string? Note)
{
    public static CheckpointView From(string tenant, RecordedCheckpoint c) =>
        new(c.Sequence, tenant, c.Head.ToSequence, c.Head.TreeSize, c.Head.RootHash, c.KeyId, c.Signature, c.Subject, c.At,
            c.PreviousTreeSize, c.ConsistencyProof, c.Note);
}

/// <summary>One Ed25519 note key: its C2SP verifier key string ("name+keyid+base64(0x01 ‖ key)"), current or still accepted.</summary>
public sealed record NoteKeyView(string Name, string KeyId, string VerifierKey, string PublicKey, bool Current);

/// <summary>
/// The keys that sign checkpoints: the ECDSA head key (null fields when none), and the Ed25519 signed-note keys, the
/// current one first, older ones still published so that heads signed with them keep verifying.
/// </summary>
public sealed record CheckpointKeyView(
    string? Algorithm, string? KeyId, string? PublicKeyPem, string? SignedText, IReadOnlyList<EarlierKeyView> EarlierKeys,
    string NoteOrigin, IReadOnlyList<NoteKeyView> NoteKeys);

/// <summary>An ECDSA key that signed heads before a rotation; heads naming its key id keep verifying.</summary>
public sealed record EarlierKeyView(string KeyId, string PublicKeyPem);

public sealed record LeafProofView(long Sequence, Guid StreamId, long Version, long LeafIndex, string LeafData, string LeafHash, IReadOnlyList<string> AuditPath);

/// <summary>Inclusion proofs (RFC 9162 section 2.1.3) in the tenant's tree of TreeSize leaves; hashes are lowercase hex.</summary>
public sealed record InclusionProofView(long TreeSize, string RootHash, IReadOnlyList<LeafProofView> Proofs);

/// <summary>A consistency proof (RFC 9162 section 2.1.4) between two sizes of the tenant's tree; hashes are lowercase hex.</summary>
public sealed record ConsistencyProofView(long First, long Second, string FirstRootHash, string SecondRootHash, IReadOnlyList<string> Proof);

public sealed record CheckpointMismatchView(long? CheckpointSequence, long ToSequence, long ExpectedTreeSize, long ActualTreeSize, string ExpectedRootHash, string ActualRootHash, string Reason);

public sealed record CheckpointVerificationView(bool Verified, int CheckpointsChecked, long EventsRead, CheckpointMismatchView? FirstMismatch);

public sealed record VerificationView(
    bool Verified, long EventsChecked, long StreamsChecked, long BrokenStreams, BrokenLinkView? FirstBroken,
    IReadOnlyList<BrokenLinkView> Broken, long ElapsedMs, long EventsPerSecond);

/// <summary>
/// GET /v1/audit/runs, /events, /verify, /export: for auditors and admins, always within the caller's own
/// tenant (a `tenant` parameter naming another tenant is refused). Every read is itself recorded (AuditAccessed).
/// </summary>
public static partial class AuditEndpoints
{
    public const string Policy = "audit-reader";
    private const int DefaultLimit = 100;

    public static IServiceCollection AddAuditTrail(this IServiceCollection services)
    {
        services.AddSingleton<AuditQueries>();
        services.AddSingleton<ChainVerification>();
        services.AddSingleton<IncrementalVerification>();
        services.AddSingleton<AuditExport>();
        services.AddSingleton<AccessLog>();
        services.AddSingleton<AuditCheckpoints>();
        services.AddSingleton(provider =>
        {
            var audit = provider.GetRequiredService<IConfiguration>().GetSection("Audit");
            return KeyFrom("Audit:CheckpointKeyPath (or Audit:PublishedCheckpointKeys)", audit["CheckpointKeyPath"], () =>
                new CheckpointSigner(audit["CheckpointKeyPath"], audit.GetSection("PublishedCheckpointKeys").GetChildren().Select(c => c.Value).OfType<string>()));
        });
        services.AddSingleton(provider =>
        {
            var audit = provider.GetRequiredService<IConfiguration>().GetSection("Audit");
            return KeyFrom("Audit:NoteKeyPath", audit["NoteKeyPath"], () => new NoteSigner(audit["NoteKeyPath"], audit["LogName"],
                audit.GetSection("PublishedNoteKeys").GetChildren().Select(c => c.Value).OfType<string>()));
        });
        services.AddSingleton<AuditTree>();
        services.AddSingleton(provider => CheckpointScheduleOptions.From(provider.GetRequiredService<IConfiguration>()));
        services.AddSingleton<CheckpointSchedule>();
        services.AddHostedService(provider => provider.GetRequiredService<CheckpointSchedule>());
        services.AddAuthorizationBuilder().AddPolicy(Policy, policy => policy.RequireAssertion(context => Access.MayAudit(context.User.ToCaller())));
        return services;
    }

    // A key file that is missing, unreadable or not a key stops start-up with the setting that names it, not a bare file error.
    private static T KeyFrom<T>(string setting, string? path, Func<T> load)
    {
        try
        {
            return load();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or FormatException
            or System.Security.Cryptography.CryptographicException)
        {
            throw new InvalidSettingException($"{setting} '{path}' cannot be read as a key: {e.Message} Create one with `Sandbox.Audited.Api dev-key --path FILE` "
                + "(--ed25519 for Audit:NoteKeyPath) or correct the path.", e);
        }
    }

    public static RouteGroupBuilder MapAudit(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/v1/audit").RequireAuthorization(Policy).WithTags("Audit");
        group.MapGet("/runs", QueryRuns);
        group.MapGet("/events", QueryEvents);
        group.MapGet("/verify", Verify);
        group.MapGet("/evidence/verify", VerifyEvidence);
        group.MapGet("/export", Export);
        group.MapPost("/checkpoints", CreateCheckpoint);
        group.MapGet("/checkpoints", ListCheckpoints);
        group.MapGet("/checkpoints/verify", VerifyCheckpoints);
        group.MapGet("/checkpoints/key", CheckpointKey);
        group.MapGet("/proofs/inclusion", InclusionProof);
        group.MapGet("/proofs/consistency", ConsistencyProof);
        return group;
    }

    public static async Task<Results<Ok<AuditPage<AuditRun>>, ProblemHttpResult>> QueryRuns(
        HttpContext http, AuditQueries queries, AccessLog accessLog, CancellationToken ct)
    {
        var q = new Query(http);
        var caller = http.User.ToCaller();
        var tenant = q.Tenant(caller);
        var (after, limit) = (q.Long("cursor") ?? 0, q.Limit());
        var filter = new RunFilter(tenant, q.Text("subject"), q.Text("language"), q.Text("status"), q.Text("decision"),
            q.Text("codeSha256"), q.Time("from"), q.Time("to"));
        if (q.Error is not null)
            return await q.RefusedAsync(accessLog, caller, AuditActions.QueryRuns);

        var page = await queries.RunsAsync(filter, after, limit, ct);
        if (await RecordAsync(http, accessLog, caller, AuditActions.QueryRuns, page.Items.Count) is { } unrecorded)
            return unrecorded;
        return TypedResults.Ok(new AuditPage<AuditRun>(page.Items, Cursor(page.NextCursor)));
    }

    public static async Task<Results<Ok<AuditPage<AuditEvent>>, ProblemHttpResult>> QueryEvents(
        HttpContext http, AuditQueries queries, AccessLog accessLog, CancellationToken ct)
    {
        var q = new Query(http);
        var caller = http.User.ToCaller();
        var filter = new EventFilter(q.Tenant(caller), q.Text("type"), q.Text("subject"), q.Time("from"), q.Time("to"));
        var (after, limit) = (q.Long("cursor") ?? 0, q.Limit());
        if (q.Error is not null)
            return await q.RefusedAsync(accessLog, caller, AuditActions.QueryEvents);

        var page = await queries.EventsAsync(filter, after, limit, ct);
        if (await RecordAsync(http, accessLog, caller, AuditActions.QueryEvents, page.Items.Count) is { } unrecorded)
            return unrecorded;
        return TypedResults.Ok(new AuditPage<AuditEvent>(page.Items, Cursor(page.NextCursor)));
    }

    public static async Task<Results<Ok<VerificationView>, ProblemHttpResult>> Verify(
        HttpContext http, ChainVerification verification, IncrementalVerification incremental, AuditCheckpoints checkpoints,
        AccessLog accessLog, CancellationToken ct)
    {
        var q = new Query(http);
        var caller = http.User.ToCaller();
        var tenant = q.Tenant(caller);
        var scope = new VerifyScope(q.Guid("runId"), q.Long("fromSequence"), q.Long("toSequence"), q.Time("from"), q.Time("to"));
        var since = q.Text("sinceCheckpoint");
        if (since is not null and not "true" and not "false")
            q.Fail("sinceCheckpoint must be true or false.");
        if (since == "true" && scope != new VerifyScope())
            q.Fail("sinceCheckpoint=true verifies everything after the last checkpoint; it takes no runId, sequence or time range.");
        if (q.Error is not null)
            return await q.RefusedAsync(accessLog, caller, AuditActions.Verify);

        // Since the last checkpoint: O(new events), each touched stream resumed from the leaf the checkpoint committed.
        VerificationReport report;
        if (since == "true")
        {
            var (from, leavesFrom) = await incremental.SinceLastCheckpointAsync(checkpoints, tenant, ct);
            report = (await incremental.VerifyAsync(tenant, from, leavesFrom, ct)).Report;
        }
        else
            report = await verification.VerifyAsync(tenant, scope, ct);
        if (await RecordAsync(http, accessLog, caller, AuditActions.Verify, report.EventsChecked) is { } unrecorded)
            return unrecorded;
        if (scope.RunId is { } runId && report.StreamsChecked == 0)
            return TypedResults.Problem(Problems.Create(404, Problems.NotFound, "Run not found", $"No run {runId} is visible to you."));
        return TypedResults.Ok(new VerificationView(report.Verified, report.EventsChecked, report.StreamsChecked, report.BrokenStreams,
            report.FirstBroken is null ? null : BrokenLinkView.From(report.FirstBroken),
            report.Broken.Select(BrokenLinkView.From).ToList(), report.ElapsedMs, report.EventsPerSecond));
    }

    /// <summary>Records a tree head over everything of the caller's tenant committed so far (keep a copy of it).</summary>
    public static async Task<Results<Created<CheckpointView>, ProblemHttpResult>> CreateCheckpoint(
        HttpContext http, AuditCheckpoints checkpoints, CancellationToken ct)
    {
        try
        {
            var recorded = await checkpoints.CreateAsync(http.User.ToCaller(), http.TraceIdentifier, ct);
            return TypedResults.Created($"/v1/audit/checkpoints?sequence={recorded.Sequence}", CheckpointView.From(http.User.ToCaller().Tenant, recorded));
        }
        catch (TimeoutException e)
        {
            // As every other 503 of the API (and as the contract declares it): the client is told when to ask again.
            http.Response.Headers.RetryAfter = "5";
            return TypedResults.Problem(Problems.Create(503, Problems.AuditUnavailable, "No checkpoint now", e.Message));
        }
    }

    public static async Task<Results<Ok<IReadOnlyList<CheckpointView>>, ProblemHttpResult>> ListCheckpoints(
        HttpContext http, AuditCheckpoints checkpoints, AccessLog accessLog, CancellationToken ct)
    {
        var q = new Query(http);
        var caller = http.User.ToCaller();
        var tenant = q.Tenant(caller);
        if (q.Error is not null)
            return await q.RefusedAsync(accessLog, caller, AuditActions.ListCheckpoints);
        var list = await checkpoints.ListAsync(tenant, ct);
        if (await RecordAsync(http, accessLog, caller, AuditActions.ListCheckpoints, list.Count) is { } unrecorded)
            return unrecorded;
        return TypedResults.Ok<IReadOnlyList<CheckpointView>>(list.Select(c => CheckpointView.From(tenant, c)).ToList());
    }

    /// <summary>
    /// Recomputes every recorded checkpoint from the events as stored; or, given toSequence, treeSize and rootHash,
    /// the head an auditor kept (which a deletion of the checkpoints themselves cannot hide).
    /// </summary>
    public static async Task<Results<Ok<CheckpointVerificationView>, ProblemHttpResult>> VerifyCheckpoints(
        HttpContext http, AuditCheckpoints checkpoints, AccessLog accessLog, CancellationToken ct)
    {
        var q = new Query(http);
        var caller = http.User.ToCaller();
        var tenant = q.Tenant(caller);
        var (toSequence, treeSize, rootHash) = (q.Long("toSequence"), q.Long("treeSize"), q.Text("rootHash"));
        var given = toSequence is not null || treeSize is not null || rootHash is not null;
        if (given && (toSequence is null || treeSize is null || rootHash is null || rootHash.Length != 64 || !rootHash.All(char.IsAsciiHexDigit)))
            q.Fail("A kept tree head needs all of toSequence, treeSize and rootHash (64 hex characters).");
        if (q.Error is not null)
            return await q.RefusedAsync(accessLog, caller, AuditActions.VerifyCheckpoints);

        var report = given
            ? await checkpoints.VerifyAsync(tenant, [(new TreeHead(toSequence!.Value, treeSize!.Value, rootHash!.ToLowerInvariant()), null)], ct)
            : await checkpoints.VerifyRecordedAsync(tenant, ct);
        if (await RecordAsync(http, accessLog, caller, AuditActions.VerifyCheckpoints, report.CheckpointsChecked) is { } unrecorded)
            return unrecorded;
        var mismatch = report.FirstMismatch is { } m
            ? new CheckpointMismatchView(m.CheckpointSequence, m.Expected.ToSequence, m.Expected.TreeSize, m.Actual.TreeSize, m.Expected.RootHash, m.Actual.RootHash, m.Reason)
            : null;
        return TypedResults.Ok(new CheckpointVerificationView(report.Verified, report.CheckpointsChecked, report.EventsRead, mismatch));
    }

    /// <summary>The public keys that sign checkpoints, to check a kept head offline; 404 when heads are not signed.</summary>
    public static Results<Ok<CheckpointKeyView>, ProblemHttpResult> CheckpointKey(HttpContext http, CheckpointSigner signer, NoteSigner notes) =>
        KeyView(http.User.ToCaller().Tenant, signer, notes) is { } view
            ? TypedResults.Ok(view)
            : TypedResults.Problem(Problems.Create(404, Problems.NotFound, "Checkpoints are not signed",
                "This deployment has no checkpoint key (Audit:CheckpointKeyPath, Audit:NoteKeyPath)."));

    /// <summary>The published checkpoint keys as a tenant sees them; null when heads are not signed.</summary>
    public static CheckpointKeyView? KeyView(string tenant, CheckpointSigner signer, NoteSigner notes) =>
        signer.PublicKeyPem is not null || signer.EarlierKeys.Count > 0 || notes.Keys.Count > 0
            ? new CheckpointKeyView(
                signer.PublicKeyPem is null ? null : "ES256 (ECDSA P-256, SHA-256; signature r||s, base64)", signer.KeyId, signer.PublicKeyPem,
                signer.PublicKeyPem is null ? null : "sandbox-audited checkpoint v1\n{tenant}\n{toSequence}\n{treeSize}\n{rootHash}\n",
                signer.EarlierKeys.Select(k => new EarlierKeyView(k.KeyId, k.PublicKeyPem)).ToList(),
                notes.Origin(tenant),
                notes.Keys.Select(k => new NoteKeyView(k.Name, k.KeyIdHex, k.ToString(), Convert.ToBase64String(k.PublicKey), k == notes.Current)).ToList())
            : null;

    /// <summary>
    /// The audit path of one event (sequence) or of every event of a run (runId) in the tenant's tree of treeSize leaves
    /// (by default the latest checkpoint's), to check against that checkpoint's root.
    /// </summary>
    public static async Task<Results<Ok<InclusionProofView>, ProblemHttpResult>> InclusionProof(
        HttpContext http, AuditTree tree, AuditCheckpoints checkpoints, AccessLog accessLog, CancellationToken ct)
    {
        var q = new Query(http);
        var caller = http.User.ToCaller();
        var tenant = q.Tenant(caller);
        var (sequence, runId, treeSize) = (q.Long("sequence"), q.Guid("runId"), q.Long("treeSize"));
        if ((sequence is null) == (runId is null) && q.Error is null)
            q.Fail("Give either sequence (an event's global sequence) or runId.");
        if (q.Error is not null)
            return await q.RefusedAsync(accessLog, caller, AuditActions.InclusionProof);

        var (view, notCovered) = await InclusionOfAsync(tree, checkpoints, tenant, sequence, runId, treeSize, ct);
        // Recorded whether or not the tree covers what was asked: a probe for runs or events is an access like any other.
        if (await RecordAsync(http, accessLog, caller, AuditActions.InclusionProof, view?.Proofs.Count ?? 0) is { } unrecorded)
            return unrecorded;
        return view is not null ? TypedResults.Ok(view) : notCovered!;
    }

    private static async Task<(InclusionProofView? View, ProblemHttpResult? NotCovered)> InclusionOfAsync(
        AuditTree tree, AuditCheckpoints checkpoints, string tenant, long? sequence, Guid? runId, long? treeSize, CancellationToken ct)
    {
        var size = treeSize ?? (await checkpoints.ListAsync(tenant, ct)).LastOrDefault()?.Head.TreeSize;
        if (size is null)
            return (null, NotCovered("No checkpoint of your tenant yet: take one (POST /v1/audit/checkpoints) or give treeSize."));
        if (await TreeTooSmallAsync(tree, tenant, size.Value, ct) is { } tooSmall)
            return (null, tooSmall);
        var leaves = await tree.LeavesAsync(tenant, sequence, runId, ct);
        if (leaves.Count == 0)
            return (null, NotCovered(runId is { } run
                ? $"No event of run {run} is in your tenant's tree yet: the run is not yours, or no checkpoint was taken since it began."
                : $"Event {sequence} is not in your tenant's tree: it is not yours, or no checkpoint was taken since it was recorded."));
        if (leaves.FirstOrDefault(l => l.LeafIndex >= size) is { } late)
            return (null, NotCovered($"Event {late.Sequence} is leaf {late.LeafIndex} of your tenant's tree, so a tree of {size} leaves does not cover it; use a later checkpoint's treeSize."));
        return (await InclusionProofsAsync(tree, tenant, leaves, size.Value, ct), null);
    }

    /// <summary>
    /// The audit paths of the given leaves (each below <paramref name="size"/>) and the root of the tenant's tree of that
    /// size, in one read of stored subtrees; what the inclusion endpoint serves and the evidence bundle carries.
    /// </summary>
    public static async Task<InclusionProofView> InclusionProofsAsync(AuditTree tree, string tenant, IReadOnlyList<TreeLeaf> leaves, long size, CancellationToken ct)
    {
        var paths = leaves.Select(l => TreeProofs.InclusionRanges(l.LeafIndex, size)).ToList();
        var hashes = await tree.HashesAsync(tenant, [new LeafRange(0, size), .. paths.SelectMany(p => p)], ct);
        var root = hashes[0];
        var proofs = new List<LeafProofView>(leaves.Count);
        var next = 1;
        for (var i = 0; i < leaves.Count; i++)
        {
            var leaf = leaves[i];
            proofs.Add(new LeafProofView(leaf.Sequence, leaf.StreamId, leaf.Version, leaf.LeafIndex, leaf.LeafData,
                Convert.ToHexStringLower(leaf.LeafHash), hashes.Skip(next).Take(paths[i].Count).Select(Convert.ToHexStringLower).ToList()));
            next += paths[i].Count;
        }
        return new InclusionProofView(size, Convert.ToHexStringLower(root), proofs);
    }

    /// <summary>The proof that the tenant's tree of `second` leaves extends the one of `first` leaves.</summary>
    public static async Task<Results<Ok<ConsistencyProofView>, ProblemHttpResult>> ConsistencyProof(
        HttpContext http, AuditTree tree, AccessLog accessLog, CancellationToken ct)
    {
        var q = new Query(http);
        var caller = http.User.ToCaller();
        var tenant = q.Tenant(caller);
        var (first, second) = (q.Long("first"), q.Long("second"));
        if ((first is null || second is null || first > second) && q.Error is null)
            q.Fail("Give first and second tree sizes, first <= second.");
        if (q.Error is not null)
            return await q.RefusedAsync(accessLog, caller, AuditActions.ConsistencyProof);
        if (await TreeTooSmallAsync(tree, tenant, second!.Value, ct) is { } tooSmall)
            return tooSmall;

        var hashes = await tree.HashesAsync(tenant,
            [new LeafRange(0, first!.Value), new LeafRange(0, second.Value), .. TreeProofs.ConsistencyRanges(first.Value, second.Value)], ct);
        var (firstRoot, secondRoot, proof) = (hashes[0], hashes[1], hashes.Skip(2).ToList());
        if (await RecordAsync(http, accessLog, caller, AuditActions.ConsistencyProof, proof.Count) is { } unrecorded)
            return unrecorded;
        return TypedResults.Ok(new ConsistencyProofView(first.Value, second.Value, Convert.ToHexStringLower(firstRoot),
            Convert.ToHexStringLower(secondRoot), proof.Select(Convert.ToHexStringLower).ToList()));
    }

    private static async Task<ProblemHttpResult?> TreeTooSmallAsync(AuditTree tree, string tenant, long size, CancellationToken ct)
    {
        var stored = await tree.SizeAsync(tenant, ct);
        return size > stored
            ? NotCovered($"Your tenant's tree has {stored} leaves so far; a tree of {size} does not exist yet. Take a checkpoint to extend it.")
            : null;
    }

    private static ProblemHttpResult NotCovered(string detail) =>
        TypedResults.Problem(Problems.Create(404, Problems.NotFound, "Not covered by that tree", detail));

    /// <summary>Streams the events; the access record follows the stream, with how many events were sent.</summary>
    public static async Task<Results<EmptyHttpResult, ProblemHttpResult>> Export(
        HttpContext http, AuditExport export, AccessLog accessLog, ILoggerFactory loggers, CancellationToken ct)
    {
        var q = new Query(http);
        var caller = http.User.ToCaller();
        var format = q.Text("format") ?? ExportFormats.Ndjson;
        var filter = new EventFilter(q.Tenant(caller), q.Text("type"), q.Text("subject"), q.Time("from"), q.Time("to"));
        if (!ExportFormats.All.Contains(format))
            q.Fail($"format must be one of: {string.Join(", ", ExportFormats.All)}.");
        if (q.Error is not null)
            return await q.RefusedAsync(accessLog, caller, AuditActions.Export);

        http.Response.ContentType = format == ExportFormats.Csv ? "text/csv; charset=utf-8" : "application/x-ndjson";
        http.Response.Headers.ContentDisposition = $"attachment; filename=\"audit-{filter.Tenant}.{format}\"";
        long sent = 0;
        try
        {
            sent = await export.WriteAsync(filter, format, http.Response.Body, ct);
        }
        finally
        {
            try
            {
                await accessLog.RecordAsync(caller, AuditActions.Export, q.Given, sent, http.Connection.RemoteIpAddress?.ToString(),
                    http.TraceIdentifier, CancellationToken.None);
            }
            catch (Exception e)
            {
                loggers.CreateLogger(typeof(AuditEndpoints)).LogError(e, "An audit export of {Count} events could not be recorded", sent);
            }
        }
        return TypedResults.Empty;
    }

    /// <summary>Reads are recorded before the results leave; if the record cannot be written the results do not either.</summary>
    private static async Task<ProblemHttpResult?> RecordAsync(HttpContext http, AccessLog accessLog, Caller caller, string action, long count)
    {
        try
        {
            await accessLog.RecordAsync(caller, action, Query.All(http), count, http.Connection.RemoteIpAddress?.ToString(),
                http.TraceIdentifier, http.RequestAborted);
            return null;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            http.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(AuditEndpoints)).LogError(e, "An audit read could not be recorded");
            return TypedResults.Problem(Problems.Create(503, Problems.AuditUnavailable, "The audit store is unavailable",
                "This read could not be recorded in the access log, so its results are withheld. Retry shortly."));
        }
    }

    private static string? Cursor(long? next) => next?.ToString(CultureInfo.InvariantCulture);

    /// <summary>Query-string parsing that collects the first error instead of throwing.</summary>
    private sealed class Query(HttpContext http)
    {
        public string? Error { get; private set; }

        public IReadOnlyDictionary<string, string> Given { get; } = All(http);

        /// <summary>The parameters as given, with control characters and lone surrogates escaped so that any of them can be recorded.</summary>
        public static IReadOnlyDictionary<string, string> All(HttpContext http)
        {
            var all = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var (key, value) in http.Request.Query)
                all[Printable(key)] = Printable(value.ToString());
            return all;
        }

        public string? Text(string name)
        {
            if (http.Request.Query[name].ToString() is not { Length: > 0 } value) return null;
            if (!IsPrintable(value))
            {
                Fail($"{name} must not contain control characters or invalid UTF-16.");
                return null;
            }
            return value;
        }

        private static bool IsPrintable(string value) => Printable(value) == value;

        private static string Printable(string value) => ClientText.Escape(value);

        public string Tenant(Caller caller)
        {
            if (Text("tenant") is { } asked && !Access.MayAudit(caller, asked))
                Fail($"You may read only your own tenant ('{caller.Tenant}'), not '{asked}'.", 403);
            return caller.Tenant;
        }

        public long? Long(string name)
        {
            if (Text(name) is not { } text) return null;
            if (long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value)) return value;
            Fail($"{name} must be a non-negative integer.");
            return null;
        }

        public int Limit()
        {
            var limit = Long("limit") ?? DefaultLimit;
            if (limit is < 1 or > AuditQueries.MaxLimit)
                Fail($"limit must be between 1 and {AuditQueries.MaxLimit}.");
            return (int)Math.Clamp(limit, 1, AuditQueries.MaxLimit);
        }

        public DateTimeOffset? Time(string name)
        {
            if (Text(name) is not { } text) return null;
            if (DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var value)) return value;
            Fail($"{name} must be an ISO 8601 time, e.g. 2025-01-31T00:00:00Z.");
            return null;
        }

        public Guid? Guid(string name)
        {
            if (Text(name) is not { } text) return null;
            if (System.Guid.TryParse(text, out var value)) return value;
            Fail($"{name} must be a run id (GUID).");
            return null;
        }

        private int _status = 400;

        public void Fail(string message, int status = 400)
        {
            if (Error is not null) return;
            Error = message;
            _status = status;
        }

        /// <summary>A refused query is recorded too (with the status it got), so that probing the audit trail leaves a trace.</summary>
        public async Task<ProblemHttpResult> RefusedAsync(AccessLog accessLog, Caller caller, string action)
        {
            try
            {
                await accessLog.RecordAsync(caller, action, Given, 0, http.Connection.RemoteIpAddress?.ToString(), http.TraceIdentifier,
                    http.RequestAborted, refusedWith: _status);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                http.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(AuditEndpoints)).LogError(e, "A refused audit read could not be recorded");
                return TypedResults.Problem(Problems.Create(503, Problems.AuditUnavailable, "The audit store is unavailable",
                    "This read was refused, and the refusal could not be recorded. Retry shortly."));
            }
            return TypedResults.Problem(_status == 403
                ? Problems.Create(403, Problems.Forbidden, "Not your tenant", Error!)
                : Problems.Create(400, Problems.InvalidRequest, "Invalid audit query", Error!));
        }
    }
}
