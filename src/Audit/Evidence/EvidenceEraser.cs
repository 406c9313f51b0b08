using Marten;
using Npgsql;
using NpgsqlTypes;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Audit.Evidence;

/// <summary>What an erasure did: the digests it erased and those it skipped (absent, or erased before).</summary>
public sealed record ErasureResult(IReadOnlyList<string> Erased, IReadOnlyList<string> Skipped);

/// <summary>
/// The one path that removes content: connected as sandbox_eraser (a role the service never holds), it first records
/// EvidenceErased (who, why, which digests) on the tenant's evidence stream, then deletes the chunks and marks each blob
/// erased. Digests and events are never touched, so the hash chain still verifies and verification says "erased".
/// Should the deletion fail after the event was recorded, running the same erasure again completes it.
/// </summary>
public sealed class EvidenceEraser(string eraserConnectionString, TimeProvider clock)
{
    public async Task<ErasureResult> EraseAsync(string tenant, IReadOnlyList<string> digests, string by, string reason, string? classification, CancellationToken ct)
    {
        if (string.IsNullOrWhiteSpace(by) || string.IsNullOrWhiteSpace(reason))
            throw new ArgumentException("An erasure needs --by (who) and --reason (why); both are recorded.");
        await using var database = NpgsqlDataSource.Create(eraserConnectionString);
        var erase = new List<string>();
        var skipped = new List<string>();
        foreach (var digest in digests.Distinct(StringComparer.Ordinal))
        {
            await using var select = database.CreateCommand($"SELECT erased_at IS NULL FROM {MartenSetup.Schema}.evidence_blobs WHERE tenant = $1 AND sha256 = $2");
            select.Parameters.AddWithValue(tenant);
            select.Parameters.AddWithValue(digest);
            (await select.ExecuteScalarAsync(ct) is true ? erase : skipped).Add(digest);
        }
        if (erase.Count == 0)
            return new ErasureResult([], skipped);

        using (var store = DocumentStore.For(o => MartenSetup.Configure(o, eraserConnectionString)))
        {
            var streamId = EvidenceStreams.For(tenant);
            var erased = new EvidenceErased(streamId, new Caller(by, tenant, ["eraser"]), erase, reason, classification, clock.GetUtcNow());
            await RunStream.AppendSharedAsync(store, streamId, new WriteContext(by, null, Tenant: tenant), erased, ct);
        }

        await using var connection = await database.OpenConnectionAsync(ct);
        await using var transaction = await connection.BeginTransactionAsync(ct);
        foreach (var digest in erase)
        {
            await using var chunks = new NpgsqlCommand($"DELETE FROM {MartenSetup.Schema}.evidence_chunks WHERE tenant = $1 AND sha256 = $2", connection, transaction);
            chunks.Parameters.AddWithValue(tenant);
            chunks.Parameters.AddWithValue(digest);
            await chunks.ExecuteNonQueryAsync(ct);
            await using var blob = new NpgsqlCommand(
                $"UPDATE {MartenSetup.Schema}.evidence_blobs SET erased_at = now(), erased_by = $3, erase_reason = $4 WHERE tenant = $1 AND sha256 = $2 AND erased_at IS NULL",
                connection, transaction);
            blob.Parameters.AddWithValue(tenant);
            blob.Parameters.AddWithValue(digest);
            blob.Parameters.AddWithValue(by);
            blob.Parameters.AddWithValue(reason);
            await blob.ExecuteNonQueryAsync(ct);
        }
        await transaction.CommitAsync(ct);
        return new ErasureResult(erase, skipped);
    }

    /// <summary>
    /// Retention: the stored content of the tenant's runs of a classification requested more than the given days ago,
    /// except content that a run outside that set (newer, or of another classification) still references.
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
        return references.Where(r => expired.Contains(r.RunId) && !kept.Contains(r.Sha256)).Select(r => r.Sha256).Distinct(StringComparer.Ordinal).ToList();
    }
}
