using Marten;
using Npgsql;
using NpgsqlTypes;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Audit.Evidence;

/// <summary>
/// What an erasure did: stored content it erased, digests not stored (yet) that it kept out of the store from now on
/// (tombstones), digests erased before, and the empty content, which it never erases.
/// </summary>
public sealed record ErasureResult(IReadOnlyList<string> Erased, IReadOnlyList<string> KeptOut, IReadOnlyList<string> AlreadyErased, IReadOnlyList<string> Empty);

/// <summary>
/// The one path that removes content: connected as sandbox_eraser (a role the service never holds), it first records
/// EvidenceErased (who, why, which digests) on the tenant's evidence stream, then deletes the chunks and marks each blob
/// erased; a digest the tenant's store does not hold yet (an outcome still in a node's journal) gets a tombstone, an erased
/// row without content, so that it is never stored afterwards. Digests and events are never touched, so the hash chain
/// still verifies and verification says "erased". Should the deletion fail after the event was recorded, running the same
/// erasure again completes it. The empty content is never erased: it holds no byte, and every run may produce it.
/// </summary>
public sealed class EvidenceEraser(string eraserConnectionString, TimeProvider clock)
{
    private static string Blobs => $"{MartenSetup.Schema}.evidence_blobs";

    public async Task<ErasureResult> EraseAsync(string tenant, IReadOnlyList<string> digests, string by, string reason, string? classification, CancellationToken ct)
    {
        if (string.IsNullOrWhiteSpace(by) || string.IsNullOrWhiteSpace(reason))
            throw new ArgumentException("An erasure needs --by (who) and --reason (why); both are recorded.");
        // Checked before anything is recorded: a tombstone is kept for any well-formed digest, so a malformed one must stop here.
        var malformed = digests.Where(d => !IsSha256(d)).ToList();
        if (malformed.Count > 0)
            throw new ArgumentException($"Not a SHA-256 digest (64 lower-case hex characters): {string.Join(' ', malformed)}. Nothing was erased.");
        var wanted = digests.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();
        var empty = wanted.Where(d => d == EvidenceStore.EmptySha256).ToList();
        await using var database = NpgsqlDataSource.Create(eraserConnectionString);
        var erase = new List<string>();
        var alreadyErased = new List<string>();
        foreach (var digest in wanted.Except(empty))
        {
            await using var select = database.CreateCommand($"SELECT erased_at IS NOT NULL FROM {Blobs} WHERE tenant = $1 AND sha256 = $2");
            select.Parameters.AddWithValue(tenant);
            select.Parameters.AddWithValue(digest);
            (await select.ExecuteScalarAsync(ct) is true ? alreadyErased : erase).Add(digest);
        }
        if (erase.Count == 0)
            return new ErasureResult([], [], alreadyErased, empty);

        using (var store = DocumentStore.For(o => MartenSetup.Configure(o, eraserConnectionString)))
        {
            var streamId = EvidenceStreams.For(tenant);
            var erased = new EvidenceErased(streamId, new Caller(by, tenant, ["eraser"]), erase, reason, classification, clock.GetUtcNow());
            await RunStream.AppendSharedAsync(store, streamId, new WriteContext(by, null, Tenant: tenant), erased, ct);
        }

        // What each digest turned out to be is decided here, under the row locks: content stored since the check above is
        // erased, content that arrives later finds the tombstone. In digest order, as the service inserts (no deadlock).
        var removed = new List<string>();
        var keptOut = new List<string>();
        await using var connection = await database.OpenConnectionAsync(ct);
        await using var transaction = await connection.BeginTransactionAsync(ct);
        foreach (var digest in erase)
        {
            // $1 tenant, $2 digest, $3 who, $4 why: the tombstone's insert and the stored row's update say the same.
            NpgsqlCommand Marking(string sql) => new(sql, connection, transaction) { Parameters = { new() { Value = tenant }, new() { Value = digest }, new() { Value = by }, new() { Value = reason } } };
            await using var tombstone = Marking(
                $"INSERT INTO {Blobs} (tenant, sha256, chunks, erased_at, erased_by, erase_reason) VALUES ($1, $2, 0, now(), $3, $4) ON CONFLICT (tenant, sha256) DO NOTHING");
            if (await tombstone.ExecuteNonQueryAsync(ct) == 1)
            {
                keptOut.Add(digest);
                continue;
            }
            await using var chunks = new NpgsqlCommand($"DELETE FROM {MartenSetup.Schema}.evidence_chunks WHERE tenant = $1 AND sha256 = $2", connection, transaction);
            chunks.Parameters.AddWithValue(tenant);
            chunks.Parameters.AddWithValue(digest);
            await chunks.ExecuteNonQueryAsync(ct);
            await using var blob = Marking(
                $"UPDATE {Blobs} SET erased_at = now(), erased_by = $3, erase_reason = $4 WHERE tenant = $1 AND sha256 = $2 AND erased_at IS NULL");
            if (await blob.ExecuteNonQueryAsync(ct) == 1)
                removed.Add(digest);
            else
            {
                // Not there to mark: erased by another eraser meanwhile, or removed by the evidence sweep since the look above
                // (it holds no erased row): then a tombstone keeps the digest out, as for content never stored.
                await using var swept = Marking(
                    $"INSERT INTO {Blobs} (tenant, sha256, chunks, erased_at, erased_by, erase_reason) VALUES ($1, $2, 0, now(), $3, $4) ON CONFLICT (tenant, sha256) DO NOTHING");
                (await swept.ExecuteNonQueryAsync(ct) == 1 ? keptOut : alreadyErased).Add(digest);
            }
        }
        await transaction.CommitAsync(ct);
        return new ErasureResult(removed, keptOut, alreadyErased, empty);
    }

    private static bool IsSha256(string digest) => digest.Length == 64 && digest.All(c => c is >= '0' and <= '9' or >= 'a' and <= 'f');

    /// <summary>
    /// Retention: the stored content of the tenant's runs of a classification requested more than the given days ago,
    /// except content that a run outside that set (newer, or of another classification) still references, and the empty content.
    /// </summary>
    public async Task<IReadOnlyList<string>> ExpiredAsync(string tenant, string classification, int olderThanDays, CancellationToken ct)
    {
        await using var database = NpgsqlDataSource.Create(eraserConnectionString);
        var references = await EvidenceReferences.OfAsync(database, tenant, null, ct);
        await using var command = database.CreateCommand("""
            SELECT stream_id FROM sandbox.mt_events
            WHERE type = 'run_requested' AND data -> 'caller' ->> 'tenant' = @tenant
              AND data ->> 'classification' = @classification AND timestamp < now() - make_interval(days => @days)
            """);
        command.Parameters.Add(new NpgsqlParameter("tenant", NpgsqlDbType.Text) { Value = tenant });
        command.Parameters.Add(new NpgsqlParameter("classification", NpgsqlDbType.Text) { Value = classification });
        command.Parameters.Add(new NpgsqlParameter("days", NpgsqlDbType.Integer) { Value = olderThanDays });
        var expired = new HashSet<Guid>();
        await using (var reader = await command.ExecuteReaderAsync(ct))
            while (await reader.ReadAsync(ct))
                expired.Add(reader.GetGuid(0));
        var kept = references.Where(r => !expired.Contains(r.RunId)).Select(r => r.Sha256).ToHashSet(StringComparer.Ordinal);
        kept.Add(EvidenceStore.EmptySha256); // no byte to erase, and every later run may produce it
        return references.Where(r => expired.Contains(r.RunId) && !kept.Contains(r.Sha256)).Select(r => r.Sha256).Distinct(StringComparer.Ordinal).ToList();
    }
}
