using System.Buffers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Unicode;

namespace Sandbox.Audited.Domain.Hashing;

/// <summary>
/// The per-stream hash chain. hash = SHA-256(prevHash ‖ canonical), where prevHash is the previous
/// event's hash as 64 lowercase hex characters (Genesis for the first event of a stream) and canonical is
/// the canonical JSON (see <see cref="CanonicalJson"/>) of {"data", "streamId", "type", "version"}, UTF-8
/// encoded. The event's time is its own "at" field inside data, so it is covered too.
/// </summary>
public static class EventChain
{
    public static readonly string Genesis = new('0', 64);

    public static string CanonicalForm(Guid streamId, long version, string eventType, string dataJson) =>
        "{\"data\":" + CanonicalJson.Canonicalize(dataJson)
        + ",\"streamId\":\"" + streamId.ToString("D") + "\""
        + ",\"type\":\"" + eventType + "\""
        + ",\"version\":" + version + "}";

    public static string Hash(string prevHash, Guid streamId, long version, string eventType, string dataJson) =>
        Sha256Hex.Of(Encoding.UTF8.GetBytes(prevHash + CanonicalForm(streamId, version, eventType, dataJson)));
}

/// <summary>
/// Computes chain hashes into one reused buffer (the same bytes as <see cref="EventChain.Hash"/>), for the
/// verifier, which hashes every stored event: data as UTF-8 is canonicalized without a document
/// (<see cref="Utf8Canonicalizer"/>). Not thread-safe: one per verification.
/// </summary>
public sealed class ChainHasher
{
    private readonly ArrayBufferWriter<byte> _buffer = new(4096);
    private readonly Utf8Canonicalizer _canonicalizer = new();
    private byte[] _utf8 = new byte[4096];

    public string Hash(string prevHash, Guid streamId, long version, string eventType, string dataJson)
    {
        var max = Encoding.UTF8.GetMaxByteCount(dataJson.Length);
        if (_utf8.Length < max)
            _utf8 = new byte[Math.Max(max, _utf8.Length * 2)];
        if (Utf8.FromUtf16(dataJson, _utf8, out _, out var written, replaceInvalidSequences: false) != OperationStatus.Done)
        {
            // Unpaired surrogates: keep whatever the document path makes of them.
            using var document = JsonDocument.Parse(dataJson);
            return Hash(prevHash, streamId, version, eventType, document.RootElement);
        }
        return Hash(prevHash, streamId, version, eventType, _utf8.AsSpan(0, written));
    }

    /// <summary>The hash over data given as the UTF-8 of its JSON text (as stored).</summary>
    public string Hash(string prevHash, Guid streamId, long version, string eventType, ReadOnlySpan<byte> dataUtf8)
    {
        _buffer.ResetWrittenCount();
        Ascii(prevHash);
        Ascii("{\"data\":");
        _canonicalizer.Write(_buffer, dataUtf8);
        return Finish(streamId, version, eventType);
    }

    public string Hash(string prevHash, Guid streamId, long version, string eventType, JsonElement data)
    {
        _buffer.ResetWrittenCount();
        Ascii(prevHash);
        Ascii("{\"data\":");
        CanonicalJson.Write(_buffer, data);
        return Finish(streamId, version, eventType);
    }

    private string Finish(Guid streamId, long version, string eventType)
    {
        Ascii(",\"streamId\":\"");
        var span = _buffer.GetSpan(36);
        streamId.TryFormat(span, out var written, "D");
        _buffer.Advance(written);
        Ascii("\",\"type\":\"");
        var typeSpan = _buffer.GetSpan(Encoding.UTF8.GetMaxByteCount(eventType.Length));
        _buffer.Advance(Encoding.UTF8.GetBytes(eventType, typeSpan));
        Ascii("\",\"version\":");
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
