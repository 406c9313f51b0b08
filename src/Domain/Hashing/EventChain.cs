using System.Buffers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Unicode;

namespace Sandbox.Audited.Domain.Hashing;

/// <summary>
/// The per-stream hash chain. hash = SHA-256(prevHash ‖ canonical), where prevHash is the previous
/// event's hash as 64 lowercase hex characters (Genesis for the first event of a stream) and canonical is
/// the canonical JSON of {"data", "streamId", "type", "version"}, UTF-8 encoded. The event's time is its own
/// "at" field inside data, so it is covered too. The canonical form is recorded per event in the "canon" header:
/// "jcs" (RFC 8785, <see cref="JcsCanonicalizer"/>) for every event written now; absent for events written before,
/// in the frozen form "v1" (<see cref="LegacyCanonicalJson"/>), which is kept only to verify them.
/// </summary>
public static class EventChain
{
    public static readonly string Genesis = new('0', 64);

    /// <summary>The form new events are hashed in (the value of their "canon" header).</summary>
    public const string CurrentCanon = JcsCanonicalizer.Version;

    /// <summary>Whether a "canon" header value names a form this code can verify (null: the legacy form).</summary>
    public static bool IsKnownCanon(string? canon) => canon is null or JcsCanonicalizer.Version;

    /// <summary>The RFC 8785 text that is hashed (after prevHash) for an event written now.</summary>
    public static string CanonicalForm(Guid streamId, long version, string eventType, string dataJson) =>
        JcsCanonicalizer.Canonicalize(Wrapper(streamId, version, eventType, dataJson));

    /// <summary>The hash of an event written now (canon "jcs").</summary>
    public static string Hash(string prevHash, Guid streamId, long version, string eventType, string dataJson) =>
        (_hasher ??= new ChainHasher()).Hash(prevHash, streamId, version, eventType, dataJson, CurrentCanon);

    [ThreadStatic]
    private static ChainHasher? _hasher;

    /// <summary>The hash in the frozen form "v1", for events recorded before RFC 8785 (no "canon" header).</summary>
    public static string LegacyHash(string prevHash, Guid streamId, long version, string eventType, string dataJson) =>
        Sha256Hex.Of(Encoding.UTF8.GetBytes(prevHash + "{\"data\":" + LegacyCanonicalJson.Canonicalize(dataJson)
            + ",\"streamId\":\"" + streamId.ToString("D") + "\""
            + ",\"type\":\"" + eventType + "\""
            + ",\"version\":" + version + "}"));

    private static string Wrapper(Guid streamId, long version, string eventType, string dataJson) =>
        "{\"data\":" + dataJson + ",\"streamId\":" + JsonSerializer.Serialize(streamId.ToString("D"))
        + ",\"type\":" + JsonSerializer.Serialize(eventType) + ",\"version\":" + version + "}";
}

/// <summary>
/// Computes chain hashes into one reused buffer, for the verifier, which hashes every stored event: data as UTF-8
/// is canonicalized without a document, in the form its "canon" header names. Not thread-safe: one per verification.
/// </summary>
public sealed class ChainHasher
{
    private readonly ArrayBufferWriter<byte> _buffer = new(4096);
    private readonly JcsCanonicalizer _jcs = new();
    private readonly LegacyUtf8Canonicalizer _legacy = new();
    private readonly Dictionary<string, byte[]> _types = new(StringComparer.Ordinal);
    private readonly Dictionary<string, byte[]> _legacyTypes = new(StringComparer.Ordinal);
    private byte[] _utf8 = new byte[4096];

    /// <summary>The hash over data given as JSON text; canon is the event's "canon" header (null: the legacy form).</summary>
    public string Hash(string prevHash, Guid streamId, long version, string eventType, string dataJson, string? canon)
    {
        var max = Encoding.UTF8.GetMaxByteCount(dataJson.Length);
        if (_utf8.Length < max)
            _utf8 = new byte[Math.Max(max, _utf8.Length * 2)];
        if (Utf8.FromUtf16(dataJson, _utf8, out _, out var written, replaceInvalidSequences: false) != OperationStatus.Done)
        {
            if (canon is not null)
                throw new JsonException("The JSON text holds an unpaired surrogate, which RFC 8785 cannot represent.");
            // Legacy form: keep whatever its document path made of unpaired surrogates.
            using var document = JsonDocument.Parse(dataJson);
            return LegacyHash(prevHash, streamId, version, eventType, document.RootElement);
        }
        return Hash(prevHash, streamId, version, eventType, _utf8.AsSpan(0, written), canon);
    }

    /// <summary>The hash over data given as the UTF-8 of its JSON text (as stored), in the form canon names.</summary>
    public string Hash(string prevHash, Guid streamId, long version, string eventType, ReadOnlySpan<byte> dataUtf8, string? canon)
    {
        _buffer.ResetWrittenCount();
        Ascii(prevHash);
        Ascii("{\"data\":");
        switch (canon)
        {
            case null:
                _legacy.Write(_buffer, dataUtf8);
                return Finish(streamId, version, LegacyType(eventType));
            case JcsCanonicalizer.Version:
                _jcs.Write(_buffer, dataUtf8);
                return Finish(streamId, version, JcsType(eventType));
            default:
                throw new ArgumentException($"Unknown canonical form \"{canon}\".", nameof(canon));
        }
    }

    private string LegacyHash(string prevHash, Guid streamId, long version, string eventType, JsonElement data)
    {
        _buffer.ResetWrittenCount();
        Ascii(prevHash);
        Ascii("{\"data\":");
        LegacyCanonicalJson.Write(_buffer, data);
        return Finish(streamId, version, LegacyType(eventType));
    }

    // v1 wrote the type between quotes as it is; RFC 8785 escapes it as any string (identical for every type name in use).
    private byte[] LegacyType(string eventType)
    {
        if (_legacyTypes.TryGetValue(eventType, out var cached))
            return cached;
        return _legacyTypes[eventType] = Encoding.UTF8.GetBytes("\"" + eventType + "\"");
    }

    private byte[] JcsType(string eventType)
    {
        if (_types.TryGetValue(eventType, out var cached))
            return cached;
        var buffer = new ArrayBufferWriter<byte>();
        _jcs.Write(buffer, JsonSerializer.SerializeToUtf8Bytes(eventType));
        return _types[eventType] = buffer.WrittenSpan.ToArray();
    }

    private string Finish(Guid streamId, long version, ReadOnlySpan<byte> quotedType)
    {
        Ascii(",\"streamId\":\"");
        var span = _buffer.GetSpan(36);
        streamId.TryFormat(span, out var written, "D");
        _buffer.Advance(written);
        Ascii("\",\"type\":");
        _buffer.Write(quotedType);
        Ascii(",\"version\":");
        span = _buffer.GetSpan(20);
        version.TryFormat(span, out written, provider: System.Globalization.CultureInfo.InvariantCulture);
        _buffer.Advance(written);
        Ascii("}");
        Span<byte> digest = stackalloc byte[32];
        SHA256.HashData(_buffer.WrittenSpan, digest);
        return Convert.ToHexStringLower(digest);
    }

    private void Ascii(string text)
    {
        var span = _buffer.GetSpan(text.Length);
        for (var i = 0; i < text.Length; i++) span[i] = (byte)text[i];
        _buffer.Advance(text.Length);
    }
}
