using System.Buffers;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.Unicode;

namespace Sandbox.Audited.Domain.Hashing;

/// <summary>
/// The JSON Canonicalization Scheme of RFC 8785, the hashed form of every event recorded with canon "jcs": no
/// insignificant whitespace, object members sorted by the UTF-16 code units of their names, strings with only the
/// mandatory escapes (\u00xx in lowercase hex for control characters without a short form), numbers as ECMAScript's
/// Number.prototype.toString writes the IEEE 754 double they denote. Written in one pass of a <see cref="Utf8JsonReader"/>
/// straight to UTF-8: no document, no string per value (the verifier canonicalizes every event). Input that RFC 8785
/// cannot represent (invalid UTF-8, lone surrogates, numbers beyond the double range, duplicate names) throws a
/// <see cref="JsonException"/>. Not thread-safe: reuse one per thread.
/// </summary>
public sealed class JcsCanonicalizer
{
    /// <summary>The value of the "canon" event header for events hashed in this form.</summary>
    public const string Version = "jcs";

    private static readonly SearchValues<byte> NeedsEscape = SearchValues.Create(
        [.. Enumerable.Range(0, 0x20).Select(b => (byte)b), (byte)'"', (byte)'\\']);

    private byte[] _out = new byte[4096];
    private int _length;
    private Member[] _members = new Member[64];
    private int _memberCount;
    private byte[] _names = new byte[1024];
    private int _namesLength;
    private byte[] _scratch = new byte[1024];
    private byte[] _unescaped = new byte[256];
    private readonly NameOrder _order;

    public JcsCanonicalizer() => _order = new NameOrder(this);

    /// <summary>The RFC 8785 form of a JSON text.</summary>
    public static string Canonicalize(string json)
    {
        var buffer = new ArrayBufferWriter<byte>();
        new JcsCanonicalizer().Write(buffer, Encoding.UTF8.GetBytes(json));
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    /// <summary>Appends the canonical UTF-8 form of one JSON value.</summary>
    // Fully optimized from the first call: a verification is one burst over many events, mostly spent here.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Write(IBufferWriter<byte> output, ReadOnlySpan<byte> json)
    {
        if (!Utf8.IsValid(json))
            throw new JsonException("The JSON text is not valid UTF-8.");
        _length = 0;
        _memberCount = 0;
        _namesLength = 0;
        var reader = new Utf8JsonReader(json);
        try
        {
            if (!reader.Read())
                throw new JsonException("No JSON value.");
            WriteValue(ref reader);
            if (reader.Read())
                throw new JsonException("Unexpected content after the JSON value.");
        }
        catch (InvalidOperationException e)
        {
            // Utf8JsonReader refuses to unescape a lone surrogate this way; RFC 8785 (I-JSON) has no place for one either.
            throw new JsonException(e.Message, e);
        }
        output.Write(_out.AsSpan(0, _length));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void WriteValue(ref Utf8JsonReader reader)
    {
        switch (reader.TokenType)
        {
            case JsonTokenType.StartObject:
                WriteObject(ref reader);
                break;
            case JsonTokenType.StartArray:
                Byte((byte)'[');
                var first = true;
                while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
                {
                    if (!first) Byte((byte)',');
                    first = false;
                    WriteValue(ref reader);
                }
                Byte((byte)']');
                break;
            case JsonTokenType.String:
                if (reader.ValueIsEscaped)
                    WriteString(Unescape(ref reader));
                else
                {
                    // An unescaped JSON string holds no control characters, quotes or backslashes: it is already canonical.
                    var value = reader.ValueSpan;
                    var span = Reserve(value.Length + 2);
                    span[0] = (byte)'"';
                    value.CopyTo(span[1..]);
                    span[value.Length + 1] = (byte)'"';
                    _length += value.Length + 2;
                }
                break;
            case JsonTokenType.Number:
                WriteNumber(ref reader);
                break;
            case JsonTokenType.True:
                Bytes("true"u8);
                break;
            case JsonTokenType.False:
                Bytes("false"u8);
                break;
            default:
                Bytes("null"u8);
                break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void WriteObject(ref Utf8JsonReader reader)
    {
        var first = _memberCount;
        var namesStart = _namesLength;
        Byte((byte)'{');
        var start = _length;
        while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
        {
            var name = reader.ValueIsEscaped ? Unescape(ref reader) : reader.ValueSpan;
            var nameStart = AppendName(name);
            var nameLength = name.Length;
            var segment = _length;
            WriteString(name);
            Byte((byte)':');
            reader.Read();
            WriteValue(ref reader);
            if (_memberCount == _members.Length)
                Array.Resize(ref _members, _members.Length * 2);
            _members[_memberCount++] = new Member(nameStart, nameLength, segment, _length - segment);
        }
        var count = _memberCount - first;
        if (count > 1)
        {
            Array.Sort(_members, first, count, _order);
            // Lay the segments out again in name order, comma-separated, from a copy of the region.
            var region = _length - start;
            if (_scratch.Length < region)
                _scratch = new byte[Math.Max(_scratch.Length * 2, region)];
            _out.AsSpan(start, region).CopyTo(_scratch);
            _length = start;
            for (var i = 0; i < count; i++)
            {
                var member = _members[first + i];
                if (i > 0)
                {
                    if (_order.Compare(_members[first + i - 1], member) == 0)
                        throw new JsonException("An object has two members with the same name.");
                    Byte((byte)',');
                }
                Bytes(_scratch.AsSpan(member.SegmentStart - start, member.SegmentLength));
            }
        }
        Byte((byte)'}');
        _memberCount = first;
        _namesLength = namesStart;
    }

    private int AppendName(ReadOnlySpan<byte> name)
    {
        if (_namesLength + name.Length > _names.Length)
            Array.Resize(ref _names, Math.Max(_names.Length * 2, _namesLength + name.Length));
        var start = _namesLength;
        name.CopyTo(_names.AsSpan(start));
        _namesLength += name.Length;
        return start;
    }

    /// <summary>The unescaped UTF-8 of the current string token (never longer than its escaped form), in a buffer of its own.</summary>
    private ReadOnlySpan<byte> Unescape(ref Utf8JsonReader reader)
    {
        var needed = reader.ValueSpan.Length;
        if (_unescaped.Length < needed)
            _unescaped = new byte[Math.Max(_unescaped.Length * 2, needed)];
        var length = reader.CopyString(_unescaped);
        return _unescaped.AsSpan(0, length);
    }

    private void WriteNumber(ref Utf8JsonReader reader)
    {
        var text = reader.ValueSpan;
        // Most numbers are small integers, already written as ECMAScript writes them (JSON has no leading zeros).
        if (text.Length <= 15 && text.IndexOfAnyExcept("-0123456789"u8) < 0 && !text.SequenceEqual("-0"u8))
        {
            Bytes(text);
            return;
        }
        if (!reader.TryGetDouble(out var value) || !double.IsFinite(value))
            throw new JsonException($"The number {Encoding.UTF8.GetString(text)} is beyond the range of an IEEE 754 double.");
        _length += FormatNumber(value, Reserve(32));
    }

    /// <summary>
    /// Writes a finite double as ECMAScript's Number.prototype.toString does (RFC 8785 section 3.2.2.3): the shortest
    /// digits that round-trip (from .NET's "R" format), laid out in plain decimal for 1e-6 &lt;= |x| &lt; 1e21 and as
    /// d.ddde±n otherwise; -0 as 0. Returns the number of bytes written (at most 25).
    /// </summary>
    public static int FormatNumber(double value, Span<byte> output)
    {
        if (value == 0)
        {
            output[0] = (byte)'0';
            return 1;
        }
        Span<byte> shortest = stackalloc byte[32];
        value.TryFormat(shortest, out var length, "R", CultureInfo.InvariantCulture);
        var text = shortest[..length];
        // .NET writes plain decimals (no exponent) only for 1e-5 <= |x| < 1e15, where ECMAScript writes the same digits.
        if (text.IndexOfAny((byte)'E', (byte)'e') < 0)
        {
            text.CopyTo(output);
            return length;
        }

        // Split "R" (e.g. -1.2345E-07, 123.45, 1E+21) into its significant digits and n, the position of the decimal
        // point relative to them: value = 0.d1d2...dk × 10^n.
        var written = 0;
        if (text[0] == (byte)'-')
        {
            output[written++] = (byte)'-';
            text = text[1..];
        }
        var exponent = 0;
        var e = text.IndexOfAny((byte)'E', (byte)'e');
        if (e >= 0)
        {
            exponent = int.Parse(text[(e + 1)..], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
            text = text[..e];
        }
        Span<byte> digits = stackalloc byte[32];
        var k = 0;
        var point = -1;
        foreach (var c in text)
        {
            if (c == (byte)'.') point = k;
            else digits[k++] = c;
        }
        var n = (point < 0 ? k : point) + exponent;
        var leading = 0;
        while (leading < k - 1 && digits[leading] == (byte)'0') leading++;
        n -= leading;
        var significant = digits[leading..k].TrimEnd((byte)'0');
        k = significant.Length;

        if (k <= n && n <= 21)
        {
            significant.CopyTo(output[written..]);
            written += k;
            output.Slice(written, n - k).Fill((byte)'0');
            written += n - k;
        }
        else if (0 < n && n <= 21)
        {
            significant[..n].CopyTo(output[written..]);
            written += n;
            output[written++] = (byte)'.';
            significant[n..].CopyTo(output[written..]);
            written += k - n;
        }
        else if (-6 < n && n <= 0)
        {
            output[written++] = (byte)'0';
            output[written++] = (byte)'.';
            output.Slice(written, -n).Fill((byte)'0');
            written += -n;
            significant.CopyTo(output[written..]);
            written += k;
        }
        else
        {
            output[written++] = significant[0];
            if (k > 1)
            {
                output[written++] = (byte)'.';
                significant[1..].CopyTo(output[written..]);
                written += k - 1;
            }
            output[written++] = (byte)'e';
            output[written++] = n - 1 < 0 ? (byte)'-' : (byte)'+';
            Math.Abs(n - 1).TryFormat(output[written..], out var exponentLength, provider: CultureInfo.InvariantCulture);
            written += exponentLength;
        }
        return written;
    }

    /// <summary>RFC 8785 section 3.2.2.2: only '"', '\' and the control characters are escaped, the five with a short form by it.</summary>
    private void WriteString(ReadOnlySpan<byte> value)
    {
        Byte((byte)'"');
        while (true)
        {
            var next = value.IndexOfAny(NeedsEscape);
            if (next < 0) break;
            Bytes(value[..next]);
            var c = value[next];
            switch (c)
            {
                case (byte)'"': Bytes("\\\""u8); break;
                case (byte)'\\': Bytes("\\\\"u8); break;
                case (byte)'\b': Bytes("\\b"u8); break;
                case (byte)'\f': Bytes("\\f"u8); break;
                case (byte)'\n': Bytes("\\n"u8); break;
                case (byte)'\r': Bytes("\\r"u8); break;
                case (byte)'\t': Bytes("\\t"u8); break;
                default:
                    var span = Reserve(6);
                    "\\u00"u8.CopyTo(span);
                    ((int)c).TryFormat(span[4..], out _, "x2", CultureInfo.InvariantCulture);
                    _length += 6;
                    break;
            }
            value = value[(next + 1)..];
        }
        Bytes(value);
        Byte((byte)'"');
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Span<byte> Reserve(int size)
    {
        if (_out.Length - _length < size)
            Array.Resize(ref _out, Math.Max(_out.Length * 2, _length + size));
        return _out.AsSpan(_length);
    }

    private void Bytes(ReadOnlySpan<byte> bytes)
    {
        bytes.CopyTo(Reserve(bytes.Length));
        _length += bytes.Length;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Byte(byte value)
    {
        if (_length == _out.Length)
            Array.Resize(ref _out, _out.Length * 2);
        _out[_length++] = value;
    }

    /// <summary>
    /// Ordinal UTF-16 order of two names given as UTF-8. Byte order is code point order, which differs from UTF-16
    /// order only for a supplementary character (a surrogate pair in UTF-16) against U+E000..U+FFFF.
    /// </summary>
    public static int CompareUtf16Order(ReadOnlySpan<byte> x, ReadOnlySpan<byte> y)
    {
        var common = x.CommonPrefixLength(y);
        if (common == x.Length || common == y.Length)
            return x.Length - y.Length;
        // The first differing bytes lead characters of the same length unless the prefix ended between characters.
        // A 4-byte lead (F0..F4) sorts before the 3-byte leads EE/EF (U+E000..U+FFFF).
        int a = x[common], b = y[common];
        if (a >= 0xF0 && b is 0xEE or 0xEF) return -1;
        if (b >= 0xF0 && a is 0xEE or 0xEF) return 1;
        return a - b;
    }

    private readonly record struct Member(int NameStart, int NameLength, int SegmentStart, int SegmentLength);

    private sealed class NameOrder(JcsCanonicalizer owner) : IComparer<Member>
    {
        public int Compare(Member x, Member y) => CompareUtf16Order(
            owner._names.AsSpan(x.NameStart, x.NameLength), owner._names.AsSpan(y.NameStart, y.NameLength));
    }
}
