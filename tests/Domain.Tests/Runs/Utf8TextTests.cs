using System.Text;
using Sandbox.Audited.Domain.Text;

namespace Sandbox.Audited.Domain.Tests.Runs;

public sealed class Utf8TextTests
{
    [Fact]
    public void OutputIsTextOnlyWhenValidUtf8WithoutNul()
    {
        Assert.Equal("h\u00e9", Utf8Text.TryDecodeOutput("h\u00e9"u8));
        Assert.Null(Utf8Text.TryDecodeOutput([0x68, 0x00]));
        Assert.Null(Utf8Text.TryDecodeOutput([0xC3]));
        Assert.Equal("a\0", Utf8Text.TryDecode([0x61, 0x00]));
    }

    [Fact]
    public void TheChunkedCheckAcceptsCharactersSplitAcrossChunksAndRefusesWhatTheWholeWouldNot()
    {
        var text = Encoding.UTF8.GetBytes("x" + new string('\u00e9', 1000) + "\U0001F600");
        for (var size = 1; size <= 7; size++)
        {
            var check = new Utf8Text.OutputCheck();
            foreach (var chunk in text.Chunk(size))
                check.Append(chunk);
            Assert.True(check.End(), $"chunks of {size}");
        }

        Assert.False(Ends([[0x61, 0xC3]]));          // ends inside a character
        Assert.False(Ends([[0x61], [0x80]]));        // a continuation byte without a lead
        Assert.False(Ends([[0x61], [0x00], [0x62]])); // NUL
        Assert.True(Ends([[0xC3], [0xA9]]));
    }

    [Fact]
    public void ACutBeforeTheBoundaryNeverSplitsACharacter()
    {
        var text = Encoding.UTF8.GetBytes("a\u00e9\u20ac\U0001F600");  // 1, 2, 3 and 4 bytes
        for (var length = 0; length <= text.Length; length++)
        {
            var cut = Utf8Text.BoundaryBefore(text.AsSpan(0, length));
            Assert.NotNull(Utf8Text.TryDecode(text.AsSpan(0, cut)));
            Assert.True(length - cut < 4, $"cut at {cut} of {length}");
            Assert.NotNull(Utf8Text.TryDecode(text.AsSpan(cut))); // the rest starts on a character
        }
        Assert.Equal(3, Utf8Text.BoundaryBefore([0xFF, 0x80, 0x80])); // not UTF-8: cut at the end
    }

    private static bool Ends(byte[][] chunks)
    {
        var check = new Utf8Text.OutputCheck();
        foreach (var chunk in chunks)
            check.Append(chunk);
        return check.End();
    }
}
