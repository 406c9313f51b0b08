using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Sandbox.Audited.Domain.Hashing;

/// <summary>
/// A stable serialization of JSON for hashing (in the spirit of RFC 8785): object members sorted by
/// ordinal key, no insignificant whitespace, strings escaped minimally, integers in plain decimal and
/// other numbers as the shortest round-trip double. PostgreSQL's jsonb reorders keys and reformats
/// numbers, so hashes are always computed over this form, never over the stored text.
/// </summary>
public static class CanonicalJson
{
    public static string Canonicalize(string json)
    {
        using var document = JsonDocument.Parse(json);
        return Canonicalize(document.RootElement);
    }

    public static string Canonicalize(JsonElement element)
    {
        var builder = new StringBuilder();
        Write(builder, element);
        return builder.ToString();
    }

    private static void Write(StringBuilder builder, JsonElement element)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
                builder.Append('{');
                var first = true;
                foreach (var property in element.EnumerateObject().OrderBy(p => p.Name, StringComparer.Ordinal))
                {
                    if (!first) builder.Append(',');
                    first = false;
                    WriteString(builder, property.Name);
                    builder.Append(':');
                    Write(builder, property.Value);
                }
                builder.Append('}');
                break;
            case JsonValueKind.Array:
                builder.Append('[');
                var index = 0;
                foreach (var item in element.EnumerateArray())
                {
                    if (index++ > 0) builder.Append(',');
                    Write(builder, item);
                }
                builder.Append(']');
                break;
            case JsonValueKind.String:
                WriteString(builder, element.GetString()!);
                break;
            case JsonValueKind.Number:
                WriteNumber(builder, element);
                break;
            case JsonValueKind.True:
                builder.Append("true");
                break;
            case JsonValueKind.False:
                builder.Append("false");
                break;
            default:
                builder.Append("null");
                break;
        }
    }

    private static void WriteNumber(StringBuilder builder, JsonElement element)
    {
        if (element.TryGetInt64(out var integer))
            builder.Append(integer.ToString(CultureInfo.InvariantCulture));
        else
        {
            var value = element.GetDouble();
            if (value == Math.Floor(value) && Math.Abs(value) < 1e15)
                builder.Append(((long)value).ToString(CultureInfo.InvariantCulture));
            else
                builder.Append(value.ToString("R", CultureInfo.InvariantCulture));
        }
    }

    private static void WriteString(StringBuilder builder, string value)
    {
        builder.Append('"');
        foreach (var c in value)
        {
            switch (c)
            {
                case '"': builder.Append("\\\""); break;
                case '\\': builder.Append("\\\\"); break;
                case '\b': builder.Append("\\b"); break;
                case '\f': builder.Append("\\f"); break;
                case '\n': builder.Append("\\n"); break;
                case '\r': builder.Append("\\r"); break;
                case '\t': builder.Append("\\t"); break;
                default:
                    if (c < 0x20) builder.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else builder.Append(c);
                    break;
            }
        }
        builder.Append('"');
    }
}
