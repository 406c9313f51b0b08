using System.Globalization;
using System.Text;

namespace Sandbox.Audited.Domain.Runs;

/// <summary>
/// How a client's own string is echoed in an error and in the record of its refusal: control characters (NUL among them,
/// which a jsonb event cannot hold) and lone surrogates written as \uXXXX escapes, and, when a bound is given, at most that
/// many characters with the original length said. A request whose language is three megabytes of noise is refused with a
/// short error and a short record, not an echo of its size; a cut never splits a surrogate pair.
/// </summary>
public static class ClientText
{
    public const int MaxEcho = 64;

    /// <summary>Longest recorded error: the service's own words around at most a few echoes.</summary>
    public const int MaxError = 1024;

    public static string Echo(string? value) => Clean(value, MaxEcho);

    /// <summary>The whole string, every character that is not printable escaped.</summary>
    public static string Escape(string? value) => Clean(value, int.MaxValue);

    /// <summary>Unprintable characters escaped; cut after max characters of the original, saying how long it was.</summary>
    public static string Clean(string? value, int max)
    {
        value ??= "";
        var text = new StringBuilder(Math.Min(value.Length, max));
        var i = 0;
        for (; i < value.Length && i < max; i++)
        {
            var c = value[i];
            if (char.IsHighSurrogate(c) && i + 1 < value.Length && char.IsLowSurrogate(value[i + 1]))
            {
                if (i + 1 >= max)
                    break;
                text.Append(c).Append(value[++i]);
            }
            else if (char.IsControl(c) || char.IsSurrogate(c))
                text.Append(CultureInfo.InvariantCulture, $"\\u{(int)c:x4}");
            else
                text.Append(c);
        }
        return i >= value.Length ? text.ToString() : $"{text}… ({value.Length} characters)";
    }
}
