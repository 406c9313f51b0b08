using System.Buffers;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.Unicode;

namespace Sandbox.Audited.Domain.Hashing;

/// <summary>
/// FROZEN, like <see cref="LegacyCanonicalJson"/>: the fast path of form "v1", for verifying events recorded before RFC 8785.
/// Writes the canonical form of <see cref="LegacyCanonicalJson"/> straight from UTF-8 JSON, byte for byte the same
/// output, in one pass of a <see cref="Utf8JsonReader"/>: no document and no string per value (the verifier
/// canonicalizes every stored event). An object's members are written in source order, then the written
/// segments are put in order of their unescaped names: ordinal UTF-16 order, compared over UTF-8 bytes (byte
/// order is code point order, which differs from UTF-16 order only for a supplementary character against
/// U+E000..U+FFFF). Not thread-safe: reuse one.
/// </summary>
public sealed class LegacyUtf8Canonicalizer
{
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

    public LegacyUtf8Canonicalizer() => _order = new NameOrder(this);

    /// <summary>Appends the canonical form of one JSON value; invalid JSON throws a <see cref="JsonException"/>.</summary>
    // Fully optimized from the first call: a verification is one burst over many events, mostly spent here.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Write(ArrayBufferWriter<byte> output, ReadOnlySpan<byte> json)
    {
        if (!Utf8.IsValid(json))
        {
            // Never from PostgreSQL (UTF-8 databases hold valid text); decode as a string reader would and take the reference path.
            output.Write(Encoding.UTF8.GetBytes(LegacyCanonicalJson.Canonicalize(Encoding.UTF8.GetString(json))));
            return;
        }
        _length = 0;
        _memberCount = 0;
        _namesLength = 0;
        var reader = new Utf8JsonReader(json);
        reader.Read();
        WriteValue(ref reader);
        if (reader.Read())
            throw new JsonException("Unexpected content after the JSON value.");
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
                if (i > 0) Byte((byte)',');
                var member = _members[first + i];
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
        var span = Reserve(32);
        int written;
        if (reader.TryGetInt64(out var integer))
            integer.TryFormat(span, out written, provider: CultureInfo.InvariantCulture);
        else
        {
            var value = reader.GetDouble();
            if (value == Math.Floor(value) && Math.Abs(value) < 1e15)
                ((long)value).TryFormat(span, out written, provider: CultureInfo.InvariantCulture);
            else
                value.TryFormat(span, out written, "R", CultureInfo.InvariantCulture);
        }
        _length += written;
    }

    /// <summary>Minimal escaping of unescaped UTF-8, as <see cref="LegacyCanonicalJson"/> does for strings.</summary>
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

    private readonly record struct Member(int NameStart, int NameLength, int SegmentStart, int SegmentLength);

    private sealed class NameOrder(LegacyUtf8Canonicalizer owner) : IComparer<Member>
    {
        public int Compare(Member x, Member y) => JcsCanonicalizer.CompareUtf16Order(
            owner._names.AsSpan(x.NameStart, x.NameLength), owner._names.AsSpan(y.NameStart, y.NameLength));
    }
}
