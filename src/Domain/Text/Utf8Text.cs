using System.Text;
using System.Text.Unicode;

namespace Sandbox.Audited.Domain.Text;

/// <summary>
/// The one place bytes become text: strict UTF-8 (an invalid byte is refused, never turned into U+FFFD, so that what is
/// recorded or answered is what was sent), and the rule for output streams: text when valid UTF-8 without NUL, else base64.
/// </summary>
public static class Utf8Text
{
    public static readonly UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>The text, or null when the bytes are not valid UTF-8.</summary>
    public static string? TryDecode(ReadOnlySpan<byte> bytes) => Utf8.IsValid(bytes) ? Strict.GetString(bytes) : null;

    /// <summary>Whether an output stream is kept as text: valid UTF-8 without NUL (jsonb cannot hold NUL).</summary>
    public static bool IsOutputText(ReadOnlySpan<byte> bytes) => bytes.IndexOf((byte)0) < 0 && Utf8.IsValid(bytes);

    /// <summary>An output stream as text (see IsOutputText), or null when it must go as base64.</summary>
    public static string? TryDecodeOutput(ReadOnlySpan<byte> bytes) => IsOutputText(bytes) ? Strict.GetString(bytes) : null;

    /// <summary>
    /// Where to cut bytes so that the cut does not fall inside a UTF-8 sequence: the start of a sequence that the bytes do not
    /// complete, else their length (bytes that are not UTF-8 are cut at their end).
    /// </summary>
    public static int BoundaryBefore(ReadOnlySpan<byte> bytes)
    {
        for (var back = 1; back <= Math.Min(4, bytes.Length); back++)
        {
            var b = bytes[^back];
            if ((b & 0xC0) == 0x80)
                continue; // a continuation byte: look further back for its lead
            var length = b >= 0xF8 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
            return length > back ? bytes.Length - back : bytes.Length;
        }
        return bytes.Length;
    }

    /// <summary>IsOutputText over a stream read in chunks that may split a character: feed every chunk, then End.</summary>
    public sealed class OutputCheck
    {
        private readonly Decoder _decoder = Strict.GetDecoder();
        private bool _invalid;

        public void Append(ReadOnlySpan<byte> chunk)
        {
            if (_invalid)
                return;
            if (chunk.IndexOf((byte)0) >= 0)
            {
                _invalid = true;
                return;
            }
            Span<char> scratch = stackalloc char[1024];
            try
            {
                // Convert (not GetCharCount) keeps a character split across chunks in the decoder for the next one.
                while (!chunk.IsEmpty)
                {
                    _decoder.Convert(chunk, scratch, flush: false, out var used, out _, out _);
                    chunk = chunk[used..];
                }
            }
            catch (DecoderFallbackException)
            {
                _invalid = true;
            }
        }

        /// <summary>After the last chunk: true when every chunk was text and the last one did not end inside a character.</summary>
        public bool End()
        {
            if (_invalid)
                return false;
            Span<char> scratch = stackalloc char[4];
            try
            {
                _decoder.Convert([], scratch, flush: true, out _, out _, out _);
                return true;
            }
            catch (DecoderFallbackException)
            {
                _invalid = true;
                return false;
            }
        }
    }
}
