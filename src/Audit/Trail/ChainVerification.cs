using System.Diagnostics;
using System.Threading.Channels;
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
    private const int BatchSize = 512;

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
            SELECT o.stream_id, e.version, e.seq_id, e.type, e.data, e.headers ->> 'hash', e.headers ->> 'prevHash', o.version, e.headers ->> 'canon'
            FROM (SELECT o.stream_id, s.version FROM owned o LEFT JOIN sandbox.mt_streams s ON s.id = o.stream_id ORDER BY o.stream_id) o
            CROSS JOIN LATERAL (SELECT * FROM sandbox.mt_events e WHERE e.stream_id = o.stream_id ORDER BY e.version) e
            ORDER BY o.stream_id, e.version
            """);
        command.CommandTimeout = 0;
        command.Parameters.Add(new NpgsqlParameter("tenant", NpgsqlDbType.Text) { Value = tenant });
        command.Parameters.Add(new NpgsqlParameter("run", NpgsqlDbType.Uuid) { Value = (object?)scope.RunId ?? DBNull.Value });
        command.Parameters.Add(new NpgsqlParameter("fromSeq", NpgsqlDbType.Bigint) { Value = (object?)scope.FromSequence ?? DBNull.Value });
        command.Parameters.Add(new NpgsqlParameter("toSeq", NpgsqlDbType.Bigint) { Value = (object?)scope.ToSequence ?? DBNull.Value });
        command.Parameters.Add(new NpgsqlParameter("from", NpgsqlDbType.TimestampTz) { Value = (object?)scope.From?.UtcDateTime ?? DBNull.Value });
        command.Parameters.Add(new NpgsqlParameter("to", NpgsqlDbType.TimestampTz) { Value = (object?)scope.To?.UtcDateTime ?? DBNull.Value });

        // One task reads rows while this one canonicalizes and hashes them; batches keep the hand-over cheap.
        var batches = Channel.CreateBounded<List<StoredEvent>>(new BoundedChannelOptions(16) { SingleReader = true, SingleWriter = true });
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var reading = Task.Run(async () =>
        {
            try
            {
                await using var reader = await command.ExecuteReaderAsync(stop.Token);
                var batch = new List<StoredEvent>(BatchSize);
                while (await reader.ReadAsync(stop.Token))
                {
                    // data as the UTF-8 of its jsonb text (Npgsql drops the version byte): no string, no document.
                    batch.Add(new StoredEvent(
                        reader.GetGuid(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetString(3), "",
                        reader.IsDBNull(5) ? null : reader.GetString(5), reader.IsDBNull(6) ? null : reader.GetString(6),
                        reader.IsDBNull(7) ? null : reader.GetInt64(7))
                    { DataUtf8 = reader.GetFieldValue<byte[]>(4), Canon = reader.IsDBNull(8) ? null : reader.GetString(8) });
                    if (batch.Count == BatchSize)
                    {
                        await batches.Writer.WriteAsync(batch, stop.Token);
                        batch = new List<StoredEvent>(BatchSize);
                    }
                }
                if (batch.Count > 0)
                    await batches.Writer.WriteAsync(batch, stop.Token);
                batches.Writer.Complete();
            }
            catch (Exception e)
            {
                batches.Writer.Complete(e);
            }
        }, CancellationToken.None);

        var verifier = new ChainVerifier();
        try
        {
            await foreach (var batch in batches.Reader.ReadAllAsync(ct))
                foreach (var e in batch)
                    verifier.Add(e);
        }
        finally
        {
            if (!reading.IsCompleted)
                await stop.CancelAsync();
            await reading;
        }
        verifier.Complete();

        var elapsed = clock.Elapsed;
        return new VerificationReport(verifier.Verified, verifier.EventsChecked, verifier.StreamsChecked, verifier.BrokenStreams,
            verifier.Breaks.Count > 0 ? verifier.Breaks[0] : null, verifier.Breaks, (long)elapsed.TotalMilliseconds,
            elapsed.TotalSeconds > 0 ? (long)(verifier.EventsChecked / elapsed.TotalSeconds) : 0);
    }
}
