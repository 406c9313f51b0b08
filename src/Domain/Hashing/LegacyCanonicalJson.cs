using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Sandbox.Audited.Domain.Hashing;

/// <summary>
/// FROZEN: the canonical form "v1" of events recorded before RFC 8785 (events without a "canon" header); used only to
/// verify them. New events are hashed with <see cref="JcsCanonicalizer"/>. Never change a byte of its output.
/// A stable serialization of JSON for hashing (in the spirit of RFC 8785): object members sorted by
/// ordinal (UTF-16 code unit) key, no insignificant whitespace, strings escaped minimally (only '"', '\',
/// \b \f \n \r \t and other control characters as \u00xx; everything else as raw UTF-8), integers in plain
/// decimal and other numbers as the shortest round-trip double (integral doubles below 1e15 as integers).
/// PostgreSQL's jsonb reorders keys and reformats numbers, so hashes are always computed over this form,
/// never over the stored text. Written straight to UTF-8 bytes: the verifier canonicalizes every stored event.
/// </summary>
public static class LegacyCanonicalJson
{
    public static string Canonicalize(string json)
    {
        using var document = JsonDocument.Parse(json);
        return Canonicalize(document.RootElement);
    }

    public static string Canonicalize(JsonElement element)
    {
        var buffer = new ArrayBufferWriter<byte>();
        Write(buffer, element);
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    /// <summary>Appends the canonical UTF-8 form of the element to the buffer.</summary>
    public static void Write(IBufferWriter<byte> output, JsonElement element)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
                Byte(output, (byte)'{');
                var count = 0;
                foreach (var _ in element.EnumerateObject()) count++;
                var properties = ArrayPool<KeyValuePair<string, JsonElement>>.Shared.Rent(count);
                try
                {
                    var i = 0;
                    foreach (var property in element.EnumerateObject()) properties[i++] = new(property.Name, property.Value);
                    Array.Sort(properties, 0, count, PropertyOrder.Instance);
                    for (i = 0; i < count; i++)
                    {
                        if (i > 0) Byte(output, (byte)',');
                        WriteString(output, properties[i].Key);
                        Byte(output, (byte)':');
                        Write(output, properties[i].Value);
                    }
                }
                finally
                {
                    ArrayPool<KeyValuePair<string, JsonElement>>.Shared.Return(properties, clearArray: true);
                }
                Byte(output, (byte)'}');
                break;
            case JsonValueKind.Array:
                Byte(output, (byte)'[');
                var index = 0;
                foreach (var item in element.EnumerateArray())
                {
                    if (index++ > 0) Byte(output, (byte)',');
                    Write(output, item);
                }
                Byte(output, (byte)']');
                break;
            case JsonValueKind.String:
                WriteString(output, element.GetString()!);
                break;
            case JsonValueKind.Number:
                WriteNumber(output, element);
                break;
            case JsonValueKind.True:
                Ascii(output, "true");
                break;
            case JsonValueKind.False:
                Ascii(output, "false");
                break;
            default:
                Ascii(output, "null");
                break;
        }
    }

    private static void WriteNumber(IBufferWriter<byte> output, JsonElement element)
    {
        if (element.TryGetInt64(out var integer))
            Ascii(output, integer.ToString(CultureInfo.InvariantCulture));
        else
        {
            var value = element.GetDouble();
            if (value == Math.Floor(value) && Math.Abs(value) < 1e15)
                Ascii(output, ((long)value).ToString(CultureInfo.InvariantCulture));
            else
                Ascii(output, value.ToString("R", CultureInfo.InvariantCulture));
        }
    }

    /// <summary>Minimal escaping; the unescaped runs are encoded as UTF-8 in one go.</summary>
    private static void WriteString(IBufferWriter<byte> output, string value)
    {
        Byte(output, (byte)'"');
        var start = 0;
        for (var i = 0; i < value.Length; i++)
        {
            var c = value[i];
            if (c >= 0x20 && c != '"' && c != '\\')
                continue;
            Utf8(output, value.AsSpan(start, i - start));
            start = i + 1;
            switch (c)
            {
                case '"': Ascii(output, "\\\""); break;
                case '\\': Ascii(output, "\\\\"); break;
                case '\b': Ascii(output, "\\b"); break;
                case '\f': Ascii(output, "\\f"); break;
                case '\n': Ascii(output, "\\n"); break;
                case '\r': Ascii(output, "\\r"); break;
                case '\t': Ascii(output, "\\t"); break;
                default: Ascii(output, "\\u" + ((int)c).ToString("x4", CultureInfo.InvariantCulture)); break;
            }
        }
        Utf8(output, value.AsSpan(start));
        Byte(output, (byte)'"');
    }

    private static void Utf8(IBufferWriter<byte> output, ReadOnlySpan<char> text)
    {
        if (text.IsEmpty) return;
        var span = output.GetSpan(Encoding.UTF8.GetMaxByteCount(text.Length));
        output.Advance(Encoding.UTF8.GetBytes(text, span));
    }

    private static void Ascii(IBufferWriter<byte> output, string text)
    {
        var span = output.GetSpan(text.Length);
        for (var i = 0; i < text.Length; i++) span[i] = (byte)text[i];
        output.Advance(text.Length);
    }

    private static void Byte(IBufferWriter<byte> output, byte value)
    {
        output.GetSpan(1)[0] = value;
        output.Advance(1);
    }

    private sealed class PropertyOrder : IComparer<KeyValuePair<string, JsonElement>>
    {
        public static readonly PropertyOrder Instance = new();

        public int Compare(KeyValuePair<string, JsonElement> x, KeyValuePair<string, JsonElement> y) => string.CompareOrdinal(x.Key, y.Key);
    }
}
