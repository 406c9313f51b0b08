using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Sandbox.Audited.Domain.Hashing;

namespace Sandbox.Audited.Domain.Tests.Hashing;

/// <summary>RFC 8785 as the RFC writes it: its examples, its number table, and byte-for-byte agreement with an independent implementation.</summary>
public sealed class JcsCanonicalizerTests
{
    private static string Jcs(string json) => JcsCanonicalizer.Canonicalize(json);

    private static string Number(double value)
    {
        Span<byte> buffer = stackalloc byte[32];
        return Encoding.ASCII.GetString(buffer[..JcsCanonicalizer.FormatNumber(value, buffer)]);
    }

    [Fact]
    public void TheRfcExampleObject()
    {
        // RFC 8785 section 3.2.2 (input) and 3.2.3 (output).
        var input = """
            {
              "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
              "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
              "literals": [null, true, false]
            }
            """;
        Assert.Equal("""{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}""", Jcs(input));
    }

    [Fact]
    public void TheRfcSortingExample()
    {
        // RFC 8785 section 3.2.3: members sorted by UTF-16 code units (the emoji's surrogate pair D83D before U+FB33).
        var input = """
            {
              "\u20ac": "Euro Sign",
              "\r": "Carriage Return",
              "\ufb33": "Hebrew Letter Dalet With Dagesh",
              "1": "One",
              "\ud83d\ude00": "Emoji: Grinning Face",
              "\u0080": "Control",
              "\u00f6": "Latin Small Letter O With Diaeresis"
            }
            """;
        Assert.Equal("{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u0080\":\"Control\",\"ö\":\"Latin Small Letter O With Diaeresis\","
            + "\"€\":\"Euro Sign\",\"😀\":\"Emoji: Grinning Face\",\"\ufb33\":\"Hebrew Letter Dalet With Dagesh\"}", Jcs(input));
    }

    [Theory]
    // RFC 8785 Appendix B: IEEE 754 bit patterns and their ECMAScript form.
    [InlineData("0000000000000000", "0")]
    [InlineData("8000000000000000", "0")]
    [InlineData("0000000000000001", "5e-324")]
    [InlineData("8000000000000001", "-5e-324")]
    [InlineData("7fefffffffffffff", "1.7976931348623157e+308")]
    [InlineData("ffefffffffffffff", "-1.7976931348623157e+308")]
    [InlineData("4340000000000000", "9007199254740992")]
    [InlineData("c340000000000000", "-9007199254740992")]
    [InlineData("4430000000000000", "295147905179352830000")]
    [InlineData("44b52d02c7e14af5", "9.999999999999997e+22")]
    [InlineData("44b52d02c7e14af6", "1e+23")]
    [InlineData("44b52d02c7e14af7", "1.0000000000000001e+23")]
    [InlineData("444b1ae4d6e2ef4e", "999999999999999700000")]
    [InlineData("444b1ae4d6e2ef4f", "999999999999999900000")]
    [InlineData("444b1ae4d6e2ef50", "1e+21")]
    [InlineData("3eb0c6f7a0b5ed8c", "9.999999999999997e-7")]
    [InlineData("3eb0c6f7a0b5ed8d", "0.000001")]
    [InlineData("41b3de4355555553", "333333333.3333332")]
    [InlineData("41b3de4355555554", "333333333.33333325")]
    [InlineData("41b3de4355555555", "333333333.3333333")]
    [InlineData("41b3de4355555556", "333333333.3333334")]
    [InlineData("41b3de4355555557", "333333333.33333343")]
    [InlineData("becbf647612f3696", "-0.0000033333333333333333")]
    [InlineData("43143ff3c1cb0959", "1424953923781206.2")]
    public void TheRfcNumberTable(string ieee754, string expected)
    {
        var value = BitConverter.Int64BitsToDouble(long.Parse(ieee754, NumberStyles.HexNumber, CultureInfo.InvariantCulture));
        Assert.Equal(expected, Number(value));
        Assert.Equal(expected, Jcs(value.ToString("R", CultureInfo.InvariantCulture)));
    }

    [Theory]
    [InlineData("0", "0")]
    [InlineData("-0", "0")]
    [InlineData("-0.0e5", "0")]
    [InlineData("1e21", "1e+21")]
    [InlineData("1E+21", "1e+21")]
    [InlineData("1e20", "100000000000000000000")]
    [InlineData("1e-7", "1e-7")]
    [InlineData("1e-6", "0.000001")]
    [InlineData("0.000001", "0.000001")]
    [InlineData("1e-300", "1e-300")]
    [InlineData("5e-324", "5e-324")]
    [InlineData("1.7976931348623157e308", "1.7976931348623157e+308")]
    [InlineData("9007199254740993", "9007199254740992")]
    [InlineData("-9007199254740993", "-9007199254740992")]
    [InlineData("9223372036854775807", "9223372036854776000")]
    [InlineData("123456789012345", "123456789012345")]
    [InlineData("1234567890123456789", "1234567890123456800")]
    [InlineData("333333333.33333329", "333333333.3333333")]
    [InlineData("1E30", "1e+30")]
    [InlineData("4.50", "4.5")]
    [InlineData("2e-3", "0.002")]
    [InlineData("1.0", "1")]
    [InlineData("100.000", "100")]
    [InlineData("0.1", "0.1")]
    [InlineData("-1.5e-9", "-1.5e-9")]
    [InlineData("12345678.9e15", "1.23456789e+22")]
    public void NumbersAreWrittenAsEcmaScriptWritesThem(string json, string expected) => Assert.Equal(expected, Jcs(json));

    [Theory]
    [InlineData("1e400")]
    [InlineData("-1e309")]
    public void NumbersBeyondADoubleAreRefused(string json) => Assert.Throws<JsonException>(() => Jcs(json));

    [Fact]
    public void StringsCarryOnlyTheMandatoryEscapes()
    {
        Assert.Equal("\"\\u0000\\u0001\\u001f\\b\\t\\n\\f\\r\\\"\\\\/\u007f\u2028<>&'\"",
            Jcs("\"\\u0000\\u0001\\u001F\\b\\t\\n\\f\\r\\\"\\\\\\/\\u007f\\u2028\\u003c>\\u0026'\""));
        Assert.Equal("\"😀𝄞é\"", Jcs("\"\\ud83d\\ude00\\uD834\\uDD1E\\u00e9\""));
        Assert.Equal("\"😀\"", Jcs("\"😀\""));
    }

    [Fact]
    public void NamesSortByUtf16CodeUnitsNotCodePoints()
    {
        // U+E000 is below U+1F600 as a code point, above its surrogate pair (D83D DE00) as UTF-16.
        Assert.Equal("{\"😀\":2,\"\uE000\":1,\"\uFFFF\":3}", Jcs("""{"\uFFFF":3,"\uE000":1,"😀":2}"""));
        Assert.Equal("""{"":0,"a":1,"aa":2,"b":3}""", Jcs("""{"b":3,"aa":2,"":0,"a":1}"""));
        Assert.Equal("""{"a":{"x":[{"c":1,"d":2}],"y":null}}""", Jcs("""{ "a" : { "y" : null , "x" : [ { "d" : 2 , "c" : 1 } ] } }"""));
    }

    [Theory]
    [InlineData("\"\\ud800\"")]
    [InlineData("{\"a\":1,\"a\":2}")]
    [InlineData("{\"\\u0061\":1,\"a\":2}")]
    [InlineData("{")]
    [InlineData("[1] 2")]
    [InlineData("")]
    public void WhatRfc8785CannotRepresentIsRefused(string json) => Assert.ThrowsAny<JsonException>(() => Jcs(json));

    [Fact]
    public void InvalidUtf8IsRefused()
    {
        var buffer = new ArrayBufferWriter<byte>();
        Assert.Throws<JsonException>(() => new JcsCanonicalizer().Write(buffer, [(byte)'"', 0xC3, (byte)'"']));
    }

    /// <summary>
    /// 20,000 random documents (extreme and random doubles in many spellings, long integers, control characters, non-BMP
    /// text, names that sort differently in UTF-8 and UTF-16) canonicalized here and by the npm package canonicalize (by
    /// the RFC's author) under node: byte-for-byte equal.
    /// </summary>
    [Fact]
    public void AgreesWithAnIndependentImplementationOnARandomCorpus()
    {
        var random = new Random(8785);
        var documents = new List<string>(20_000);
        for (var i = 0; i < 20_000; i++)
        {
            var text = new StringBuilder();
            WriteValue(random, text, 0);
            documents.Add(text.ToString());
        }

        var reference = ReferenceCanonicalize(documents);

        Assert.Equal(documents.Count, reference.Count);
        var canonicalizer = new JcsCanonicalizer();
        var buffer = new ArrayBufferWriter<byte>();
        for (var i = 0; i < documents.Count; i++)
        {
            buffer.ResetWrittenCount();
            canonicalizer.Write(buffer, Encoding.UTF8.GetBytes(documents[i]));
            var ours = Encoding.UTF8.GetString(buffer.WrittenSpan);
            if (ours != reference[i])
                Assert.Fail($"document {i} differs:\n  input:  {documents[i]}\n  ours:   {ours}\n  node:   {reference[i]}");
        }
    }

    private static List<string> ReferenceCanonicalize(IReadOnlyList<string> documents)
    {
        var directory = Path.Combine(RepoRoot(), "tests", "jcs");
        Assert.True(File.Exists(Path.Combine(directory, "node_modules", "canonicalize", "package.json")),
            "tests/jcs/node_modules is missing: `npm ci` in tests/jcs (./sbx test does).");
        var start = new ProcessStartInfo("node", ["canonicalize.mjs"])
        {
            WorkingDirectory = directory,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardInputEncoding = new UTF8Encoding(false),
            StandardOutputEncoding = new UTF8Encoding(false),
        };
        using var node = Process.Start(start) ?? throw new InvalidOperationException("node did not start");
        var output = node.StandardOutput.ReadToEndAsync();
        var errors = node.StandardError.ReadToEndAsync();
        foreach (var document in documents)
            node.StandardInput.Write(document + "\n");
        node.StandardInput.Close();
        Assert.True(node.WaitForExit(TimeSpan.FromMinutes(2)), "node did not finish within 2 minutes");
        Assert.True(node.ExitCode == 0, "node failed: " + errors.Result);
        return output.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries).ToList();
    }

    private static string RepoRoot()
    {
        if (Environment.GetEnvironmentVariable("SBX_REPO_ROOT") is { Length: > 0 } root)
            return root;
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
            if (File.Exists(Path.Combine(directory.FullName, "Sandbox.Audited.sln")))
                return directory.FullName;
        throw new InvalidOperationException("The repository root (Sandbox.Audited.sln) was not found above the test binaries.");
    }

    private static readonly string[] Names = ["a", "b", "ab", "B", "_", "é", "ß", "\uE000", "\uFFFD", "😀", "𝄞", "a\"", "tab\t", "\u0001", "10", "2", "", "\u2028", "\uFB33"];
    private static readonly string[] Pieces = ["a", "Z", " ", "é", "\"", "\\", "\n", "\r", "\t", "\b", "\f", "\u0000", "\u001f", "\u007f", "😀", "/", "<", "\u2028", "\uE000", "\uFFFF"];

    private static void WriteValue(Random random, StringBuilder text, int depth)
    {
        switch (random.Next(depth > 3 ? 5 : 7))
        {
            case 0:
            case 1:
                text.Append(RandomNumber(random));
                break;
            case 2:
                WriteString(random, text, string.Concat(Enumerable.Range(0, random.Next(10)).Select(_ => Pieces[random.Next(Pieces.Length)])));
                break;
            case 3:
                text.Append(random.Next(2) == 0 ? "true" : "false");
                break;
            case 4:
                text.Append("null");
                break;
            case 5:
                text.Append('{');
                var used = new HashSet<string>(StringComparer.Ordinal);
                for (var n = random.Next(7); n > 0; n--)
                {
                    var name = Names[random.Next(Names.Length)] + (random.Next(3) == 0 ? Names[random.Next(Names.Length)] : "");
                    if (!used.Add(name)) continue;
                    if (used.Count > 1) text.Append(random.Next(4) == 0 ? " , " : ",");
                    WriteString(random, text, name);
                    text.Append(':');
                    WriteValue(random, text, depth + 1);
                }
                text.Append('}');
                break;
            default:
                text.Append('[');
                for (var n = random.Next(5); n > 0; n--)
                {
                    WriteValue(random, text, depth + 1);
                    if (n > 1) text.Append(',');
                }
                text.Append(']');
                break;
        }
    }

    /// <summary>JSON string syntax in several spellings: raw, \uXXXX (upper or lower case), surrogate pairs escaped.</summary>
    private static void WriteString(Random random, StringBuilder text, string value)
    {
        text.Append('"');
        Span<char> units = stackalloc char[2];
        foreach (var rune in value.EnumerateRunes())
        {
            var escape = rune.Value < 0x20 || rune.Value == '"' || rune.Value == '\\' || random.Next(5) == 0;
            if (!escape)
                text.Append(rune.ToString());
            else
            {
                var count = rune.EncodeToUtf16(units);
                for (var i = 0; i < count; i++)
                    text.Append("\\u").Append(((int)units[i]).ToString(random.Next(2) == 0 ? "x4" : "X4", CultureInfo.InvariantCulture));
            }
        }
        text.Append('"');
    }

    private static string RandomNumber(Random random)
    {
        switch (random.Next(8))
        {
            case 0:
                // Any finite double, from its bits: subnormals, extremes, everything in between.
                double bits;
                do bits = BitConverter.Int64BitsToDouble(random.NextInt64(long.MinValue, long.MaxValue));
                while (!double.IsFinite(bits));
                return bits.ToString("R", CultureInfo.InvariantCulture);
            case 1:
                var d = random.NextDouble() * Math.Pow(10, random.Next(-30, 30)) * (random.Next(2) == 0 ? -1 : 1);
                return d.ToString(random.Next(3) switch { 0 => "R", 1 => "E25", _ => "E3" }, CultureInfo.InvariantCulture);
            case 2:
                // Integers around and beyond 2^53 and long's range.
                return (random.Next(2) == 0 ? "-" : "") + (random.Next(1, 10) + string.Concat(Enumerable.Range(0, random.Next(0, 30)).Select(_ => random.Next(10))));
            case 3:
                return random.Next(-1_000_000, 1_000_000).ToString(CultureInfo.InvariantCulture);
            case 4:
                // Long decimal spellings with an exponent: rounding of many digits.
                return random.Next(10) + "." + string.Concat(Enumerable.Range(0, random.Next(1, 40)).Select(_ => random.Next(10)))
                    + (random.Next(2) == 0 ? "e" : "E") + random.Next(-330, 300).ToString(CultureInfo.InvariantCulture);
            case 5:
                // Powers of ten at the layout boundaries (1e-7, 1e-6, 1e20, 1e21).
                return (random.Next(4) == 0 ? "-" : "") + random.Next(1, 10) + "e" + random.Next(-9, 24).ToString(CultureInfo.InvariantCulture);
            case 6:
                return random.Next(3) switch { 0 => "-0", 1 => "0.0", _ => "-0.0e-5" };
            default:
                return (random.NextDouble() * 1000).ToString("F" + random.Next(0, 12), CultureInfo.InvariantCulture);
        }
    }
}
