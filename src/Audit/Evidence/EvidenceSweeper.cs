using Marten;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Domain.Evidence;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Audit.Evidence;

using Removal = List<(SweptContent Content, IReadOnlyList<HoldFacts> Released)>;

/// <summary>EvidenceSweep:* settings. Defaults: on, a pass a minute, a grace of one hour, 1000 holds a pass (1.4 million a day).</summary>
public sealed class EvidenceSweepOptions
{
    public const string Section = "EvidenceSweep";

    public bool Enabled { get; set; } = true;

    public int IntervalSeconds { get; set; } = 60;

    public const int MaxIntervalSeconds = 7 * 24 * 3600;

    /// <summary>Nothing younger is looked at: longer than any write-ahead or outcome commit, and than a heartbeat's renewal.</summary>
    public int GraceSeconds { get; set; } = 3600;

    /// <summary>Holds (and, with IncludeUnheld, contents without one) looked at in one pass.</summary>
    public int BatchSize { get; set; } = 1000;

    /// <summary>Also remove contents no hold accounts for: stored before this version, or by a node of an earlier one.</summary>
    public bool IncludeUnheld { get; set; }

    public TimeSpan Grace => TimeSpan.FromSeconds(GraceSeconds);

    public EvidenceSweepOptions Validated()
    {
        if (GraceSeconds < 300)
            throw new Domain.Startup.InvalidSettingException($"EvidenceSweep:GraceSeconds is {GraceSeconds}; it must be at least 300 (a heartbeat renews holds every {EvidenceHolds.RenewEvery.TotalSeconds:F0} s, and a commit in flight must not be swept).");
        if (IntervalSeconds < 1 || BatchSize < 1)
            throw new Domain.Startup.InvalidSettingException("EvidenceSweep:IntervalSeconds and EvidenceSweep:BatchSize must be positive.");
        // A longer period is more than the pass's timer takes: the node would stop at start as if it were a defect.
        if (IntervalSeconds > MaxIntervalSeconds)
            throw new Domain.Startup.InvalidSettingException($"EvidenceSweep:IntervalSeconds is {IntervalSeconds}; it must be at most {MaxIntervalSeconds} (a week).");
        return this;
    }
}

/// <summary>What one pass did: null when another node was sweeping.</summary>
public sealed record SweepReport(int HoldsLookedAt, int HoldsReleased, IReadOnlyList<(string Tenant, SweptContent Content)> Removed, int TenantsFailed);

/// <summary>
/// Removes stored contents that no event names once nothing can name them any more (a run's commit failed for good), and
/// records each removal as evidence_swept on the tenant's evidence stream in the same transaction. One node at a time (a
/// session advisory lock for the pass); each pass looks at a bounded batch. The facts are read here, the decisions are the
/// Domain's (EvidenceSweep), and the removal itself is the database's sbx_evidence_sweep, which refuses a content that is
/// named, held, erased, empty or in use by a writer (migration 0100).
/// </summary>
public sealed partial class EvidenceSweeper(
    NpgsqlDataSource database,
    IDocumentStore store,
    EvidenceSweepOptions options,
    string node,
    TimeProvider clock,
    ILogger<EvidenceSweeper> logger) : BackgroundService
{
    public const string Subject = "system:evidence-sweep";

    private (DateTimeOffset At, string Tenant, string Sha256, Guid RunId)? _holdCursor;
    private (DateTimeOffset At, string Tenant, string Sha256)? _contentCursor;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (!options.Enabled)
            return;
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(options.IntervalSeconds), clock);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                try
                {
                    await PassAsync(stoppingToken);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    LogPassFailed(e);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Stopped, also when the host gives up on a failed start without StopAsync: not a failure of the sweep.
        }
    }

    /// <summary>One pass; null when another node holds the sweep.</summary>
    public async Task<SweepReport?> PassAsync(CancellationToken ct)
    {
        await using var guard = await database.OpenConnectionAsync(ct);
        await using (var take = new NpgsqlCommand("SELECT pg_try_advisory_lock(hashtextextended('sbx-evidence-sweep', 0))", guard))
            if (await take.ExecuteScalarAsync(ct) is not true)
                return null;
        try
        {
            var report = await SweepAsync(ct);
            if (report.Removed.Count > 0 || report.HoldsReleased > 0 || report.TenantsFailed > 0)
                LogPass(report.HoldsLookedAt, report.HoldsReleased, report.Removed.Count, report.Removed.Sum(r => r.Content.Bytes ?? 0), report.TenantsFailed);
            return report;
        }
        finally
        {
            await using var release = new NpgsqlCommand("SELECT pg_advisory_unlock(hashtextextended('sbx-evidence-sweep', 0))", guard);
            await release.ExecuteScalarAsync(CancellationToken.None);
        }
    }

    private async Task<SweepReport> SweepAsync(CancellationToken ct)
    {
        var (now, holds) = await OldHoldsAsync(ct);
        var verdicts = holds.Select(h => (Hold: h, Verdict: EvidenceSweep.DecideHold(h, now, options.Grace))).ToList();
        var released = verdicts.Where(v => v.Verdict is HoldVerdict.Release).ToList();

        // The contents whose holds went, as they are now: how many holds they have left, whether anything names them.
        var contents = new List<(ContentFacts Facts, IReadOnlyList<HoldFacts> Released)>();
        foreach (var group in released.GroupBy(r => (r.Hold.Tenant, r.Hold.Sha256)))
        {
            var row = await ContentRowAsync(group.Key.Tenant, group.Key.Sha256, [.. group.Select(g => g.Hold.RunId)], ct);
            if (row is null)
                continue;
            contents.Add((row with { Released = [.. group.Select(g => g.Verdict.Reason)] }, [.. group.Select(g => g.Hold)]));
        }
        if (options.IncludeUnheld)
            contents.AddRange((await UnheldAsync(now, ct)).Select(c => (c, (IReadOnlyList<HoldFacts>)[])));
        await MarkNamedAsync(contents, now, ct);

        var decided = contents.Select(c => (c.Facts, c.Released, Verdict: EvidenceSweep.DecideContent(c.Facts, now, options.Grace, options.IncludeUnheld))).ToList();
        // Holds released from contents that stay are simply gone; those of contents removed go with them, in the removal's commit.
        await DeleteHoldsAsync(database, decided.Where(d => d.Verdict is ContentVerdict.Keep).SelectMany(d => d.Released).ToList(), ct);

        var removed = new List<(string, SweptContent)>();
        var failed = 0;
        foreach (var tenant in decided.Where(d => d.Verdict is ContentVerdict.Remove).GroupBy(d => d.Facts.Tenant))
        {
            Removal batch = [.. tenant.Select(d => (new SweptContent(d.Facts.Sha256, d.Facts.Bytes, d.Verdict.Reason), d.Released))];
            // All of the tenant's in one removal and one event; if that is refused (a writer came back to one of them), one by one.
            List<Removal> parts = batch.Count > 1 ? [batch, .. batch.Select(b => new Removal { b })] : [batch];
            var refused = false;
            foreach (var part in parts)
            {
                var whole = ReferenceEquals(part, batch);
                if (await RemoveAsync(tenant.Key, part, ct))
                {
                    removed.AddRange(part.Select(p => (tenant.Key, p.Content)));
                    if (whole)
                        break;
                }
                else
                    refused |= !whole || batch.Count == 1;
            }
            if (refused)
                failed++;
        }
        return new SweepReport(holds.Count, released.Count, removed, failed);
    }

    // One removal and its record, in one transaction; false (logged) when the database refused it: nothing of it happened.
    private async Task<bool> RemoveAsync(string tenant, Removal part, CancellationToken ct)
    {
        var swept = part.Select(p => p.Content).OrderBy(c => c.Sha256, StringComparer.Ordinal).ToList();
        var holdsGoing = part.SelectMany(p => p.Released).ToList();
        try
        {
            var streamId = EvidenceStreams.For(tenant);
            var recorded = new EvidenceSwept(streamId, new Caller(Subject, tenant, ["system"]), node, swept, options.GraceSeconds, clock.GetUtcNow());
            await RunStream.AppendSharedAsync(store, streamId, new WriteContext(Subject, null, Tenant: tenant), recorded, ct, session =>
            {
                if (holdsGoing.Count > 0)
                    session.QueueSqlCommand(DeleteHoldsSql("?", "?", "?", "?"), HoldArrays(holdsGoing));
                // After the event in the commit (Marten writes events first): the function refuses a removal not on record (0102).
                session.QueueSqlCommand($"SELECT count(*) FROM {MartenSetup.Schema}.sbx_evidence_sweep(?, ?)", tenant, swept.Select(s => s.Sha256).ToArray());
            });
            foreach (var s in swept)
                LogRemoved(tenant, s.Sha256, s.Bytes ?? 0, s.Reason);
            return true;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            LogTenantFailed(e, tenant, swept.Count); // a writer came back to one of them, or the store is away
            return false;
        }
    }

    // Holds older than the grace, oldest first from where the last pass stopped; the facts the decision needs, read at one time.
    private async Task<(DateTimeOffset Now, IReadOnlyList<HoldFacts> Holds)> OldHoldsAsync(CancellationToken ct)
    {
        var s = MartenSetup.Schema;
        await using var command = database.CreateCommand($"""
            SELECT now(), h.tenant, h.sha256, h.run_id, h.node, h.held_at,
                   EXISTS (SELECT 1 FROM {s}.mt_streams st WHERE st.id = h.run_id),
                   (SELECT max(CASE e.type WHEN 'run_abandoned' THEN 1 ELSE 2 END) FROM {s}.mt_events e
                     WHERE e.stream_id = h.run_id AND e.type IN ('run_completed', 'run_failed', 'run_abandoned')),
                   EXISTS (SELECT 1 FROM {s}.mt_events e WHERE e.stream_id = h.run_id
                     AND e.type NOT IN ('evidence_erased', 'evidence_swept') AND strpos(e.data::text, h.sha256) > 0),
                   n.started_at, n.heartbeat_at, r.released_at
            FROM {s}.evidence_holds h LEFT JOIN {s}.nodes n ON n.node_id = h.node LEFT JOIN {s}.evidence_node_releases r ON r.node = h.node
            WHERE h.held_at < now() - make_interval(secs => $1)
              AND ($2::timestamptz IS NULL OR (h.held_at, h.tenant, h.sha256, h.run_id) > ($2, $3, $4, $5))
            ORDER BY h.held_at, h.tenant, h.sha256, h.run_id
            LIMIT $6
            """);
        command.Parameters.AddWithValue((double)options.GraceSeconds);
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)_holdCursor?.At ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.TimestampTz });
        command.Parameters.AddWithValue(_holdCursor?.Tenant ?? "");
        command.Parameters.AddWithValue(_holdCursor?.Sha256 ?? "");
        command.Parameters.AddWithValue(_holdCursor?.RunId ?? Guid.Empty);
        command.Parameters.AddWithValue(options.BatchSize);
        var holds = new List<HoldFacts>();
        var now = clock.GetUtcNow();
        await using (var reader = await command.ExecuteReaderAsync(ct))
            while (await reader.ReadAsync(ct))
            {
                now = reader.GetFieldValue<DateTimeOffset>(0);
                var end = reader.IsDBNull(7) ? RunEnd.None : reader.GetInt32(7) == 1 ? RunEnd.Abandoned : RunEnd.Ended;
                holds.Add(new HoldFacts(reader.GetString(1), reader.GetString(2), reader.GetGuid(3), reader.GetString(4), reader.GetFieldValue<DateTimeOffset>(5),
                    reader.GetBoolean(6), end, reader.GetBoolean(8),
                    reader.IsDBNull(9) ? null : reader.GetFieldValue<DateTimeOffset>(9), reader.IsDBNull(10) ? null : reader.GetFieldValue<DateTimeOffset>(10),
                    reader.IsDBNull(11) ? null : reader.GetFieldValue<DateTimeOffset>(11)));
            }
        // A short batch reached the end: the next pass starts from the oldest again (kept holds are looked at again).
        _holdCursor = holds.Count < options.BatchSize ? null : (holds[^1].HeldAt, holds[^1].Tenant, holds[^1].Sha256, holds[^1].RunId);
        if (holds.Count == 0)
        {
            await using var clockNow = database.CreateCommand("SELECT now()");
            await using var reader = await clockNow.ExecuteReaderAsync(ct);
            await reader.ReadAsync(ct);
            now = reader.GetFieldValue<DateTimeOffset>(0);
        }
        return (now, holds);
    }

    // A content as stored, with the number of its holds other than those being released (null: no longer stored).
    private async Task<ContentFacts?> ContentRowAsync(string tenant, string sha256, Guid[] releasing, CancellationToken ct)
    {
        await using var command = database.CreateCommand($"""
            SELECT b.bytes, b.stored_at, b.erased_at IS NOT NULL,
                   (SELECT count(*) FROM {MartenSetup.Schema}.evidence_holds h WHERE h.tenant = b.tenant AND h.sha256 = b.sha256 AND NOT (h.run_id = ANY($3)))
            FROM {MartenSetup.Schema}.evidence_blobs b WHERE b.tenant = $1 AND b.sha256 = $2
            """);
        command.Parameters.AddWithValue(tenant);
        command.Parameters.AddWithValue(sha256);
        command.Parameters.AddWithValue(releasing);
        await using var reader = await command.ExecuteReaderAsync(ct);
        if (!await reader.ReadAsync(ct))
            return null;
        return new ContentFacts(tenant, sha256, reader.IsDBNull(0) ? null : reader.GetInt64(0), reader.GetFieldValue<DateTimeOffset>(1), reader.GetBoolean(2),
            Named: false, HoldsLeft: (int)reader.GetInt64(3), Released: []);
    }

    // Contents no hold accounts for, older than the grace, oldest first from where the last pass stopped.
    private async Task<IReadOnlyList<ContentFacts>> UnheldAsync(DateTimeOffset now, CancellationToken ct)
    {
        var s = MartenSetup.Schema;
        await using var command = database.CreateCommand($"""
            SELECT b.tenant, b.sha256, b.bytes, b.stored_at FROM {s}.evidence_blobs b
            WHERE b.erased_at IS NULL AND b.sha256 <> $1 AND b.stored_at < $2
              AND NOT EXISTS (SELECT 1 FROM {s}.evidence_holds h WHERE h.tenant = b.tenant AND h.sha256 = b.sha256)
              AND ($3::timestamptz IS NULL OR (b.stored_at, b.tenant, b.sha256) > ($3, $4, $5))
            ORDER BY b.stored_at, b.tenant, b.sha256
            LIMIT $6
            """);
        command.Parameters.AddWithValue(EvidenceSweep.EmptySha256);
        command.Parameters.AddWithValue(now - options.Grace);
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)_contentCursor?.At ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.TimestampTz });
        command.Parameters.AddWithValue(_contentCursor?.Tenant ?? "");
        command.Parameters.AddWithValue(_contentCursor?.Sha256 ?? "");
        command.Parameters.AddWithValue(options.BatchSize);
        var found = new List<ContentFacts>();
        await using (var reader = await command.ExecuteReaderAsync(ct))
            while (await reader.ReadAsync(ct))
                found.Add(new ContentFacts(reader.GetString(0), reader.GetString(1), reader.IsDBNull(2) ? null : reader.GetInt64(2), reader.GetFieldValue<DateTimeOffset>(3),
                    Erased: false, Named: false, HoldsLeft: 0, Released: []));
        _contentCursor = found.Count < options.BatchSize ? null : (found[^1].StoredAt, found[^1].Tenant, found[^1].Sha256);
        return found;
    }

    // Whether any event of the tenant's runs names each content that would otherwise go (one scan per tenant).
    private async Task MarkNamedAsync(List<(ContentFacts Facts, IReadOnlyList<HoldFacts> Released)> contents, DateTimeOffset now, CancellationToken ct)
    {
        var asked = contents
            .Where(c => EvidenceSweep.DecideContent(c.Facts, now, options.Grace, options.IncludeUnheld) is ContentVerdict.Remove)
            .GroupBy(c => c.Facts.Tenant);
        var named = new HashSet<(string, string)>();
        foreach (var tenant in asked)
        {
            await using var command = database.CreateCommand($"SELECT * FROM {MartenSetup.Schema}.sbx_evidence_named($1, $2)");
            command.CommandTimeout = 0;
            command.Parameters.AddWithValue(tenant.Key);
            command.Parameters.AddWithValue(tenant.Select(c => c.Facts.Sha256).Distinct().ToArray());
            await using var reader = await command.ExecuteReaderAsync(ct);
            while (await reader.ReadAsync(ct))
                named.Add((tenant.Key, reader.GetString(0)));
        }
        for (var i = 0; i < contents.Count; i++)
            if (named.Contains((contents[i].Facts.Tenant, contents[i].Facts.Sha256)))
                contents[i] = (contents[i].Facts with { Named = true }, contents[i].Released);
    }

    // A hold is deleted only as it was read: one its node renewed meanwhile stays.
    private static string DeleteHoldsSql(string tenants, string sha256s, string runs, string heldAt) =>
        $"DELETE FROM {MartenSetup.Schema}.evidence_holds h USING unnest({tenants}::text[], {sha256s}::text[], {runs}::uuid[], {heldAt}::timestamptz[]) AS r(tenant, sha256, run_id, held_at) "
        + "WHERE h.tenant = r.tenant AND h.sha256 = r.sha256 AND h.run_id = r.run_id AND h.held_at = r.held_at";

    private static object[] HoldArrays(IReadOnlyList<HoldFacts> holds) =>
        [holds.Select(h => h.Tenant).ToArray(), holds.Select(h => h.Sha256).ToArray(), holds.Select(h => h.RunId).ToArray(), holds.Select(h => h.HeldAt).ToArray()];

    private static async Task DeleteHoldsAsync(NpgsqlDataSource database, IReadOnlyList<HoldFacts> holds, CancellationToken ct)
    {
        if (holds.Count == 0)
            return;
        await using var command = database.CreateCommand(DeleteHoldsSql("$1", "$2", "$3", "$4"));
        foreach (var values in HoldArrays(holds))
            command.Parameters.AddWithValue(values);
        await command.ExecuteNonQueryAsync(ct);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Evidence sweep: {Holds} old hold(s) looked at, {Released} released, {Removed} content(s) removed ({Bytes} bytes), {Failed} tenant(s) left for the next pass")]
    private partial void LogPass(int holds, int released, int removed, long bytes, int failed);

    [LoggerMessage(Level = LogLevel.Information, Message = "Evidence sweep removed {Sha256} of tenant {Tenant} ({Bytes} bytes): {Reason}")]
    private partial void LogRemoved(string tenant, string sha256, long bytes, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Evidence sweep: {Count} content(s) of tenant {Tenant} not removed (nothing of them was, nor recorded); the next pass decides again")]
    private partial void LogTenantFailed(Exception e, string tenant, int count);

    [LoggerMessage(Level = LogLevel.Error, Message = "An evidence sweep pass failed; the next interval retries")]
    private partial void LogPassFailed(Exception e);
}
