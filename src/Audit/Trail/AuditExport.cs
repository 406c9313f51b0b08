using System.Buffers;
using System.Data;
using System.Text;
using System.Text.Json;
using Npgsql;

namespace Sandbox.Audited.Audit.Trail;

public static class ExportFormats
{
    public const string Ndjson = "ndjson";
    public const string Csv = "csv";

    public static readonly IReadOnlySet<string> All = new HashSet<string> { Ndjson, Csv };
}

/// <summary>
/// Streams every matching event, with its hashes and the canonical form they were computed in ("canon": "jcs" for
/// RFC 8785, null for the legacy form), straight from a sequential reader to the output in
/// 32 KiB chunks: memory stays constant however many events there are.
/// </summary>
public sealed class AuditExport(NpgsqlDataSource database)
{
    private const int FlushAt = 32 * 1024;
    private static readonly string[] Columns =
        ["sequence", "streamId", "version", "type", "timestamp", "tenant", "subject", "user", "correlationId", "causationId", "hash", "prevHash", "canon", "data"];

    public async Task<long> WriteAsync(EventFilter filter, string format, Stream output, CancellationToken ct)
    {
        await using var command = database.CreateCommand($"""
            SELECT {AuditQueries.EventColumns}, e.headers ->> 'canon'
            FROM sandbox.mt_events e {AuditQueries.StreamOwner}
            WHERE {AuditQueries.EventWhere}
            ORDER BY e.seq_id
            """);
        command.CommandTimeout = 0;
        AuditQueries.AddEventFilter(command, filter);
        return await WriteRowsAsync(command, format, output, ct);
    }

    /// <summary>One stream of the tenant (a run, or its evidence stream), every event, in the NDJSON export format.</summary>
    public async Task<long> WriteStreamAsync(string tenant, Guid streamId, Stream output, CancellationToken ct)
    {
        await using var command = database.CreateCommand($"""
            SELECT {AuditQueries.EventColumns}, e.headers ->> 'canon'
            FROM sandbox.mt_events e {AuditQueries.StreamOwner}
            WHERE {AuditQueries.OwnedBy} AND e.stream_id = @stream
            ORDER BY e.seq_id
            """);
        command.Parameters.Add(new NpgsqlParameter("tenant", NpgsqlTypes.NpgsqlDbType.Text) { Value = tenant });
        command.Parameters.Add(new NpgsqlParameter("stream", NpgsqlTypes.NpgsqlDbType.Uuid) { Value = streamId });
        return await WriteRowsAsync(command, ExportFormats.Ndjson, output, ct);
    }

    private static async Task<long> WriteRowsAsync(NpgsqlCommand command, string format, Stream output, CancellationToken ct)
    {
        var buffer = new ArrayBufferWriter<byte>(FlushAt * 2);
        await using var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { SkipValidation = true });
        var values = new string?[Columns.Length];
        if (format == ExportFormats.Csv)
            WriteCsvLine(buffer, Columns);

        long count = 0;
        await using (var reader = await command.ExecuteReaderAsync(CommandBehavior.SequentialAccess, ct))
        {
            while (await reader.ReadAsync(ct))
            {
                values[0] = reader.GetInt64(0).ToString(System.Globalization.CultureInfo.InvariantCulture);
                values[1] = reader.GetGuid(1).ToString("D");
                values[2] = reader.GetInt64(2).ToString(System.Globalization.CultureInfo.InvariantCulture);
                values[3] = reader.GetString(3);
                values[4] = reader.GetFieldValue<DateTimeOffset>(4).ToString("O", System.Globalization.CultureInfo.InvariantCulture);
                for (var i = 5; i < 12; i++)
                    values[i] = reader.IsDBNull(i) ? null : reader.GetString(i);
                // Sequential access reads columns in order: data (12) comes before the canon header (13) in the query.
                values[13] = reader.GetString(12);
                values[12] = reader.IsDBNull(13) ? null : reader.GetString(13);

                if (format == ExportFormats.Csv)
                    WriteCsvLine(buffer, values);
                else
                    WriteJsonLine(json, buffer, values);
                count++;
                if (buffer.WrittenCount >= FlushAt)
                {
                    await output.WriteAsync(buffer.WrittenMemory, ct);
                    buffer.ResetWrittenCount();
                }
            }
        }
        await output.WriteAsync(buffer.WrittenMemory, ct);
        await output.FlushAsync(ct);
        return count;
    }

    private static void WriteJsonLine(Utf8JsonWriter json, ArrayBufferWriter<byte> buffer, string?[] values)
    {
        json.Reset(buffer);
        json.WriteStartObject();
        json.WriteNumber(Columns[0], long.Parse(values[0]!, System.Globalization.CultureInfo.InvariantCulture));
        json.WriteString(Columns[1], values[1]);
        json.WriteNumber(Columns[2], long.Parse(values[2]!, System.Globalization.CultureInfo.InvariantCulture));
        for (var i = 3; i < Columns.Length - 1; i++)
            json.WriteString(Columns[i], values[i]);
        json.WritePropertyName(Columns[^1]);
        json.WriteRawValue(values[^1]!, skipInputValidation: true);
        json.WriteEndObject();
        json.Flush();
        buffer.GetSpan(1)[0] = (byte)'\n';
        buffer.Advance(1);
    }

    /// <summary>RFC 4180: fields with a comma, quote or line break are quoted, quotes doubled.</summary>
    private static void WriteCsvLine(ArrayBufferWriter<byte> buffer, string?[] values)
    {
        for (var i = 0; i < values.Length; i++)
        {
            if (i > 0) Append(buffer, ",");
            var value = values[i] ?? "";
            if (value.AsSpan().IndexOfAny(",\"\r\n") >= 0)
                Append(buffer, "\"" + value.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"");
            else
                Append(buffer, value);
        }
        Append(buffer, "\r\n");
    }

    private static void Append(ArrayBufferWriter<byte> buffer, string text)
    {
        var span = buffer.GetSpan(Encoding.UTF8.GetMaxByteCount(text.Length));
        buffer.Advance(Encoding.UTF8.GetBytes(text, span));
    }
}
