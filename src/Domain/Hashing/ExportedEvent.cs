using System.Globalization;
using System.Text.Json;

namespace Sandbox.Audited.Domain.Hashing;

/// <summary>
/// One line of an NDJSON audit export (GET /v1/audit/export): the fields the offline verifier needs, and the event's
/// data as the exact UTF-8 text of the line (hashes are recomputed over its canonical form, never over a re-serialization).
/// </summary>
public sealed record ExportedEvent(
    long Line, long Sequence, Guid StreamId, long Version, string Type, string? Tenant, string? Hash, string? PrevHash, string? Canon,
    ReadOnlyMemory<byte> Data)
{
    /// <summary>Reads one export line; a line that is not an export record throws a <see cref="FormatException"/> naming what is wrong.</summary>
    public static ExportedEvent Parse(ReadOnlySpan<byte> line, long lineNumber)
    {
        long? sequence = null, version = null;
        Guid? streamId = null;
        string? type = null, tenant = null, hash = null, prevHash = null, canon = null;
        ReadOnlyMemory<byte>? data = null;
        try
        {
            var reader = new Utf8JsonReader(line);
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
                throw new FormatException($"line {lineNumber}: not a JSON object");
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var name = reader.GetString();
                reader.Read();
                switch (name)
                {
                    case "sequence": sequence = reader.GetInt64(); break;
                    case "streamId":
                        streamId = Guid.TryParseExact(reader.GetString(), "D", out var id) ? id : throw new FormatException($"line {lineNumber}: streamId is not a UUID");
                        break;
                    case "version": version = reader.GetInt64(); break;
                    case "type": type = reader.GetString(); break;
                    case "tenant": tenant = NullableString(ref reader); break;
                    case "hash": hash = NullableString(ref reader); break;
                    case "prevHash": prevHash = NullableString(ref reader); break;
                    case "canon": canon = NullableString(ref reader); break;
                    case "data":
                        var start = (int)reader.TokenStartIndex;
                        reader.Skip();
                        data = line[start..(int)reader.BytesConsumed].ToArray();
                        break;
                    default: reader.Skip(); break;
                }
            }
            if (reader.Read())
                throw new FormatException($"line {lineNumber}: unexpected content after the JSON object");
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or OverflowException)
        {
            throw new FormatException($"line {lineNumber}: not a valid export record ({e.Message})", e);
        }
        return new ExportedEvent(lineNumber,
            sequence ?? throw Missing("sequence"), streamId ?? throw Missing("streamId"), version ?? throw Missing("version"),
            type ?? throw Missing("type"), tenant, hash, prevHash, canon, data ?? throw Missing("data"));

        FormatException Missing(string field) => new($"line {lineNumber}: the field \"{field}\" is missing");
    }

    private static string? NullableString(ref Utf8JsonReader reader) => reader.TokenType == JsonTokenType.Null ? null : reader.GetString();

    /// <summary>What a checkpoint commits to for this event (see <see cref="MerkleTree.EventLeaf"/>).</summary>
    public byte[] Leaf => MerkleTree.EventLeaf(Sequence, StreamId, Version, Hash);

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"line {Line} (sequence {Sequence}, stream {StreamId:D} version {Version}, {Type})");
}
