using System.Buffers;
using System.Text;
using System.Text.Json;
using Sandbox.Audited.Domain.Hashing;

namespace Sandbox.Audited.Domain.Tests.Hashing;

/// <summary>The byte-level canonicalizer the verifier uses must write exactly what the reference (LegacyCanonicalJson) writes.</summary>
public sealed class LegacyCanonicalizerTests
{
    private static string Fast(string json)
    {
        var buffer = new ArrayBufferWriter<byte>();
        new LegacyUtf8Canonicalizer().Write(buffer, Encoding.UTF8.GetBytes(json));
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    [Theory]
    [InlineData("""{"b":1.5,"a":[true,null,"x\u0001"],"c":{"z":10,"y":1e3}}""")]
    [InlineData("""{"n":[0,-0,1.0,-1.50,1e15,1e14,123456789012345678901,0.1,1.5e300,-2.5e-7,9223372036854775807,-9223372036854775808,9223372036854775808,4.0e2]}""")]
    [InlineData("""{"s":"tab\t nl\n cr\r bs\\ q\" bell\u0007 del\u007f slash\/ é \u00e9 😀 \ud83d\ude00 \uFFFF"}""")]
    [InlineData("""{"\u0062":1,"a\"b":2,"a\\b":3,"a\nb":4,"":5}""")]
    [InlineData("""{"\uE000":1,"😀":2,"\uFFFF":3,"z":4,"é":5,"\u00ff":6,"\u0800":7,"\uD7FF":8,"𐀀":9,"a😀":10,"a\uE000":11}""")]
    [InlineData("""{"outer":{"b":{"d":[{"y":1,"x":2},[]],"c":{}},"a":[[{"k":"v","j":null}]]},"empty":"","arr":[]}""")]
    [InlineData("""  [ 1 , "a" , { "b" : false } ]  """)]
    [InlineData("\"just a string\"")]
    [InlineData("42")]
    [InlineData("null")]
    public void WritesTheReferenceForm(string json) => Assert.Equal(LegacyCanonicalJson.Canonicalize(json), Fast(json));

    [Fact]
    public void NamesSortInUtf16OrderNotUtf8Order()
    {
        // UTF-8 bytes put U+E000 (EE 80 80) before U+1F600 (F0 9F 98 80); UTF-16 puts the surrogate pair (D83D) first.
        Assert.Equal("{\"😀\":2,\"\uE000\":1}", Fast("""{"\uE000":1,"😀":2}"""));
    }

    [Theory]
    [InlineData("{")]
    [InlineData("""{"a":1} x""")]
    [InlineData("""{"a":01}""")]
    [InlineData("")]
    public void InvalidJsonThrowsAJsonException(string json) => Assert.ThrowsAny<JsonException>(() => Fast(json));

    [Fact]
    public void RandomDocumentsMatchTheReference()
    {
        var random = new Random(20250101);
        string[] names = ["a", "b", "ab", "B", "_", "é", "ß", "\uE000", "\uFFFD", "😀", "𝄞", "a\"", "tab\t", "ё", "z", "aa", "\u0001"];
        for (var i = 0; i < 2000; i++)
        {
            var json = JsonSerializer.Serialize(Value(random, names, 0), new JsonSerializerOptions { Encoder = i % 2 == 0
                ? System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping : System.Text.Encodings.Web.JavaScriptEncoder.Default });
            Assert.Equal(LegacyCanonicalJson.Canonicalize(json), Fast(json));
        }
    }

    private static readonly string[] Pieces = ["a", "Z", " ", "é", "\"", "\\", "\n", "\t", "\u0002", "😀", "/", "<", "&", "'", "\u2028", "\uE000", "\u007f"];

    private static object? Value(Random random, string[] names, int depth)
    {
        switch (random.Next(depth > 3 ? 6 : 8))
        {
            case 0: return random.Next(-1000, 1000);
            case 1: return random.NextDouble() * Math.Pow(10, random.Next(-10, 20));
            case 2: return string.Concat(Enumerable.Range(0, random.Next(12)).Select(_ => Pieces[random.Next(Pieces.Length)]));
            case 3: return random.Next(2) == 0;
            case 4: return null;
            case 5: return (long)random.NextInt64();
            case 6:
                var map = new Dictionary<string, object?>();
                for (var n = random.Next(8); n > 0; n--) map[names[random.Next(names.Length)] + (random.Next(3) == 0 ? names[random.Next(names.Length)] : "")] = Value(random, names, depth + 1);
                return map;
            default:
                return Enumerable.Range(0, random.Next(5)).Select(_ => Value(random, names, depth + 1)).ToList();
        }
    }
}
