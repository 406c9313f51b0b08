using System.Data;
using System.Diagnostics;
using Npgsql;
using NpgsqlTypes;
using Sandbox.Audited.Domain.Hashing;

namespace Sandbox.Audited.Audit.Trail;

/// <summary>What to verify: one run, a global sequence range, a time range, or (nothing set) the whole tenant.</summary>
public sealed record VerifyScope(Guid? RunId = null, long? FromSequence = null, long? ToSequence = null, DateTimeOffset? From = null, DateTimeOffset? To = null);

public sealed record VerificationReport(
    bool Verified, long EventsChecked, long StreamsChecked, long BrokenStreams, ChainBreak? FirstBroken,
    IReadOnlyList<ChainBreak> Broken, long ElapsedMs, long EventsPerSecond);

/// <summary>
/// Recomputes the hash chain from the rows as stored (raw SQL, no Marten deserialization). Every stream that
/// has an event in the scope is verified from its first event, so a range can never hide a break before it.
/// A stream belongs to a tenant when any of its events names the tenant (the caller in the data, or the
/// tenant header), so removing a run's first event does not hide the run from its tenant's auditors.
/// </summary>
public sealed class ChainVerification(NpgsqlDataSource database)
{
    public async Task<VerificationReport> VerifyAsync(string tenant, VerifyScope scope, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        await using var command = database.CreateCommand("""
            WITH touched AS (
                SELECT DISTINCT e.stream_id FROM sandbox.mt_events e
                WHERE (@run::uuid IS NULL OR e.stream_id = @run)
                  AND (@fromSeq::bigint IS NULL OR e.seq_id >= @fromSeq)
                  AND (@toSeq::bigint IS NULL OR e.seq_id <= @toSeq)
                  AND (@from::timestamptz IS NULL OR e.timestamp >= @from)
                  AND (@to::timestamptz IS NULL OR e.timestamp < @to)
            ), owned AS (
                SELECT t.stream_id FROM touched t
                WHERE EXISTS (SELECT 1 FROM sandbox.mt_events o WHERE o.stream_id = t.stream_id
                              AND (o.headers ->> 'tenant' = @tenant OR o.data -> 'caller' ->> 'tenant' = @tenant))
            )
            SELECT e.stream_id, e.version, e.seq_id, e.type, e.data::text, e.headers ->> 'hash', e.headers ->> 'prevHash', s.version
            FROM sandbox.mt_events e
            JOIN owned o ON o.stream_id = e.stream_id
            LEFT JOIN sandbox.mt_streams s ON s.id = e.stream_id
            ORDER BY e.stream_id, e.version
            """);
        command.CommandTimeout = 0;
        command.Parameters.Add(new NpgsqlParameter("tenant", NpgsqlDbType.Text) { Value = tenant });
        command.Parameters.Add(new NpgsqlParameter("run", NpgsqlDbType.Uuid) { Value = (object?)scope.RunId ?? DBNull.Value });
        command.Parameters.Add(new NpgsqlParameter("fromSeq", NpgsqlDbType.Bigint) { Value = (object?)scope.FromSequence ?? DBNull.Value });
        command.Parameters.Add(new NpgsqlParameter("toSeq", NpgsqlDbType.Bigint) { Value = (object?)scope.ToSequence ?? DBNull.Value });
        command.Parameters.Add(new NpgsqlParameter("from", NpgsqlDbType.TimestampTz) { Value = (object?)scope.From?.UtcDateTime ?? DBNull.Value });
        command.Parameters.Add(new NpgsqlParameter("to", NpgsqlDbType.TimestampTz) { Value = (object?)scope.To?.UtcDateTime ?? DBNull.Value });

        var verifier = new ChainVerifier();
        await using (var reader = await command.ExecuteReaderAsync(CommandBehavior.SequentialAccess, ct))
        {
            while (await reader.ReadAsync(ct))
            {
                verifier.Add(new StoredEvent(
                    reader.GetGuid(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetString(3), reader.GetString(4),
                    reader.IsDBNull(5) ? null : reader.GetString(5), reader.IsDBNull(6) ? null : reader.GetString(6),
                    reader.IsDBNull(7) ? null : reader.GetInt64(7)));
            }
        }
        verifier.Complete();

        var elapsed = clock.Elapsed;
        return new VerificationReport(verifier.Verified, verifier.EventsChecked, verifier.StreamsChecked, verifier.BrokenStreams,
            verifier.Breaks.Count > 0 ? verifier.Breaks[0] : null, verifier.Breaks, (long)elapsed.TotalMilliseconds,
            elapsed.TotalSeconds > 0 ? (long)(verifier.EventsChecked / elapsed.TotalSeconds) : 0);
    }
}
