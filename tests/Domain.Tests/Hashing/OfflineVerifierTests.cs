using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Sandbox.Audited.Domain.Hashing;

namespace Sandbox.Audited.Domain.Tests.Hashing;

/// <summary>The offline verifier over an export built here the way the service writes one: each kind of tampering fails a named check.</summary>
public sealed class OfflineVerifierTests : IDisposable
{
    private const string Tenant = "acme";
    private readonly ECDsa _key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
    private readonly CheckpointKeySet _keys = new();

    private readonly string _keyId;

    public OfflineVerifierTests() => _keyId = _keys.Add(_key.ExportSubjectPublicKeyInfoPem()).Single();

    public void Dispose()
    {
        _key.Dispose();
        _keys.Dispose();
    }

    /// <summary>Two interleaved streams, the first two events of stream A in the legacy form, the rest in RFC 8785.</summary>
    private static List<string> Export()
    {
        var a = Guid.Parse("11111111-1111-1111-1111-111111111111");
        var b = Guid.Parse("22222222-2222-2222-2222-222222222222");
        var lines = new List<string>();
        var last = new Dictionary<Guid, (long Version, string Hash)> { [a] = (0, EventChain.Genesis), [b] = (0, EventChain.Genesis) };
        var sequence = 100L;
        foreach (var stream in new[] { a, b, a, a, b, a, b, b, a })
        {
            var (version, previous) = last[stream];
            version++;
            var legacy = stream == a && version <= 2;
            var data = $$"""{"caller":{"tenant":"{{Tenant}}"},"n":{{version}},"cpus":1e-300,"big":1e21,"text":"é\u0001😀"}""";
            var hash = legacy ? EventChain.LegacyHash(previous, stream, version, "evt", data) : EventChain.Hash(previous, stream, version, "evt", data);
            var line = new JsonObject
            {
                ["sequence"] = sequence++, ["streamId"] = stream.ToString(), ["version"] = version, ["type"] = "evt",
                ["timestamp"] = "2026-01-01T00:00:00.0000000+00:00", ["tenant"] = Tenant, ["subject"] = "ann", ["user"] = "ann",
                ["correlationId"] = null, ["causationId"] = null, ["hash"] = hash, ["prevHash"] = previous,
                ["canon"] = legacy ? null : "jcs", ["data"] = JsonNode.Parse(data),
            }.ToJsonString();
            lines.Add(line);
            last[stream] = (version, hash);
        }
        return lines;
    }

    private CheckpointHead Head(IReadOnlyList<string> lines, long toSequence)
    {
        var tree = new MerkleTree();
        foreach (var line in lines.Select((l, i) => ExportedEvent.Parse(Encoding.UTF8.GetBytes(l), i + 1)).Where(e => e.Sequence <= toSequence))
            tree.Add(line.Leaf);
        var signature = Convert.ToBase64String(_key.SignData(CheckpointHead.SignedText(Tenant, toSequence, tree.Size, tree.Root), HashAlgorithmName.SHA256));
        return new CheckpointHead(Tenant, toSequence, tree.Size, tree.Root, _keyId, signature, 999);
    }

    private IReadOnlyList<VerifierCheck> Verify(IEnumerable<string> lines, IReadOnlyList<CheckpointHead>? heads = null,
        IReadOnlyList<InclusionProof>? inclusions = null, IReadOnlyList<ConsistencyProof>? consistencies = null)
    {
        var verifier = new OfflineVerifier(heads ?? [], _keys, inclusions ?? [], consistencies ?? []);
        var n = 0;
        foreach (var line in lines)
            verifier.Add(ExportedEvent.Parse(Encoding.UTF8.GetBytes(line), ++n));
        return verifier.Complete();
    }

    private static VerifierCheck Failed(IReadOnlyList<VerifierCheck> checks) => checks.First(c => !c.Passed);

    [Fact]
    public void AnIntactExportWithItsCheckpointVerifies()
    {
        var lines = Export();
        var checks = Verify(lines, [Head(lines, 108)]);

        Assert.All(checks, c => Assert.True(c.Passed, c.Name + ": " + c.Detail));
        Assert.Contains(checks, c => c.Name == "hash chains" && c.Detail.Contains("9 event hashes recomputed (7 in RFC 8785 (canon \"jcs\"), 2 in the legacy form)"));
        Assert.Contains(checks, c => c.Name == "checkpoint 999 tree" && c.Detail.Contains("9 events"));
        Assert.Contains(checks, c => c.Name == "checkpoint 999 signature");
    }

    [Fact]
    public void AnEarlierCheckpointCoversOnlyItsPrefix()
    {
        var lines = Export();
        Assert.All(Verify(lines, [Head(lines, 104), Head(lines, 108)]), c => Assert.True(c.Passed, c.Detail));
    }

    [Fact]
    public void ADeletedLineIsCaught()
    {
        var lines = Export();
        var head = Head(lines, 108);
        lines.RemoveAt(3); // stream A version 3

        var checks = Verify(lines, [head]);

        Assert.Contains("version 3 is missing", Failed(checks).Detail);
        Assert.Contains(checks, c => c.Name == "checkpoint 999 tree" && !c.Passed && c.Detail.Contains("events deleted"));
    }

    [Fact]
    public void ADeletedLastEventIsCaughtOnlyByTheCheckpoint()
    {
        var lines = Export();
        var head = Head(lines, 108);
        lines.RemoveAt(lines.Count - 1);

        var checks = Verify(lines, [head]);

        Assert.True(checks.Single(c => c.Name == "hash chains").Passed);
        Assert.Equal("checkpoint 999 tree", Failed(checks).Name);
    }

    [Fact]
    public void AnAlteredFieldIsCaught()
    {
        var lines = Export();
        var head = Head(lines, 108);
        lines[4] = lines[4].Replace("\"n\":2", "\"n\":3", StringComparison.Ordinal);

        var failed = Failed(Verify(lines, [head]));

        Assert.Equal("hash chains", failed.Name);
        Assert.Contains("line 5 (sequence 104", failed.Detail);
        Assert.Contains("hash mismatch", failed.Detail);
    }

    [Fact]
    public void AnAlteredNumberSpellingThatDenotesTheSameValueIsNotAChange()
    {
        var lines = Export();
        lines[4] = lines[4].Replace("1e-300", "0.1E-299", StringComparison.Ordinal).Replace("1e21", "1000000000000000000000", StringComparison.Ordinal);

        Assert.All(Verify(lines), c => Assert.True(c.Passed, c.Detail));
    }

    [Fact]
    public void AnInsertedLineIsCaught()
    {
        var lines = Export();
        var head = Head(lines, 108);
        lines.Insert(5, lines[2]); // stream A version 2 again

        var checks = Verify(lines, [head]);

        Assert.False(checks.Single(c => c.Name == "order").Passed);
        Assert.Contains("appears again", checks.Single(c => c.Name == "hash chains").Detail);
        Assert.False(checks.Single(c => c.Name == "checkpoint 999 tree").Passed);
    }

    [Fact]
    public void SwappedLinesAreCaught()
    {
        var lines = Export();
        var head = Head(lines, 108);
        (lines[1], lines[2]) = (lines[2], lines[1]);

        var failed = Failed(Verify(lines, [head]));

        Assert.Equal("order", failed.Name);
        Assert.Contains("sequence 101 does not follow 102", failed.Detail);
    }

    [Fact]
    public void AnEventMovedToAnotherSequenceIsCaughtByTheCheckpoint()
    {
        var lines = Export();
        var head = Head(lines, 108);
        // Two events of different streams trade sequence numbers and places: each chain alone still links.
        var first = JsonNode.Parse(lines[1])!;
        var second = JsonNode.Parse(lines[2])!;
        (first["sequence"], second["sequence"]) = (102, 101);
        (lines[1], lines[2]) = (second.ToJsonString(), first.ToJsonString());

        var checks = Verify(lines, [head]);

        Assert.True(checks.Single(c => c.Name == "order").Passed);
        Assert.True(checks.Single(c => c.Name == "hash chains").Passed);
        Assert.Contains("an event altered, replaced or reordered", Failed(checks).Detail);
    }

    [Fact]
    public void AFlippedCanonicalFormIsCaught()
    {
        var lines = Export();
        lines[0] = lines[0].Replace("\"canon\":null", "\"canon\":\"jcs\"", StringComparison.Ordinal);

        Assert.Contains("hash mismatch", Failed(Verify(lines)).Detail);
    }

    [Fact]
    public void AForgedOrUnknownSignatureIsCaught()
    {
        var lines = Export();
        var head = Head(lines, 108);

        Assert.Contains("does not verify", Failed(Verify(lines, [head with { TreeSize = 8 }])).Detail);
        Assert.Contains("not among the public keys", Failed(Verify(lines, [head with { KeyId = new string('a', 64) }])).Detail);
        Assert.Contains("unsigned", Failed(Verify(lines, [head with { Signature = null }])).Detail);
    }

    [Fact]
    public void AKeySetAcceptsHeadsOfEveryKeyItHolds()
    {
        using var old = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var ids = _keys.Add(old.ExportSubjectPublicKeyInfoPem() + "\n" + _key.ExportSubjectPublicKeyInfoPem());
        var lines = Export();
        var head = Head(lines, 108);
        var oldHead = head with
        {
            KeyId = ids[0],
            Signature = Convert.ToBase64String(old.SignData(CheckpointHead.SignedText(Tenant, 108, head.TreeSize, head.RootHash), HashAlgorithmName.SHA256)),
        };

        Assert.Equal(2, _keys.KeyIds.Count);
        Assert.All(Verify(lines, [head, oldHead]), c => Assert.True(c.Passed, c.Detail));
    }

    [Fact]
    public void InclusionAndConsistencyProofsCheckAgainstTheExportAndTheCheckpoint()
    {
        var lines = Export();
        var leaves = lines.Select((l, i) => ExportedEvent.Parse(Encoding.UTF8.GetBytes(l), i + 1).Leaf).ToArray();
        var head = Head(lines, 108);
        var inclusion = new InclusionProof(103, 3, 9, Rfc9162.Path(3, leaves), null, null);
        var consistency = new ConsistencyProof(5, 9, Rfc9162.Proof(5, leaves), null, null);

        Assert.All(Verify(lines, [head], [inclusion], [consistency]), c => Assert.True(c.Passed, c.Detail));

        Assert.Contains("the export at leaf 3", Failed(Verify(lines, [head], [inclusion with { LeafIndex = 4 }])).Detail);
        var wrongPath = inclusion.Path.Select(p => p.ToArray()).ToList();
        wrongPath[1][0] ^= 1;
        Assert.Contains("does not lead", Failed(Verify(lines, [head], [inclusion with { Path = wrongPath }])).Detail);
        Assert.Contains("not the root of the checkpoint", Failed(Verify(lines, [head], [inclusion with { RootHash = new byte[32] }])).Detail);
        Assert.Contains("does not show", Failed(Verify(lines, [head], [], [consistency with { Path = Rfc9162.Proof(4, leaves) }])).Detail);
    }

    [Fact]
    public void ProofFilesInTheDocumentedShapesAreRead()
    {
        var path = new[] { new string('a', 64), Convert.ToBase64String(new byte[32]) };
        var run = ProofFiles.ParseInclusion(JsonSerializer.Serialize(new
        {
            treeSize = 9, rootHash = new string('b', 64),
            proofs = new[] { new { sequence = 103, leafIndex = 3, auditPath = path }, new { sequence = 104, leafIndex = 4, auditPath = path } },
        }));
        var consistency = Assert.Single(ProofFiles.ParseConsistency("""{"first":5,"second":9,"proof":[]}"""));

        Assert.Equal([9L, 9L], run.Select(p => p.TreeSize));
        Assert.Equal(new byte[32], run[1].Path[1]);
        Assert.Equal((5L, 9L, 0), (consistency.FirstSize, consistency.SecondSize, consistency.Path.Count));
        Assert.Throws<FormatException>(() => ProofFiles.ParseInclusion("""{"leafIndex":1}"""));
        Assert.Throws<FormatException>(() => ProofFiles.ParseInclusion("""{"leafIndex":1,"treeSize":2,"auditPath":["abc"]}"""));
    }

    [Theory]
    [InlineData("not json")]
    [InlineData("""{"sequence":1}""")]
    [InlineData("""{"sequence":1,"streamId":"x","version":1,"type":"t","data":{}}""")]
    public void AnUnreadableLineNamesItsLine(string line)
    {
        var e = Assert.Throws<FormatException>(() => ExportedEvent.Parse(Encoding.UTF8.GetBytes(line), 7));
        Assert.StartsWith("line 7:", e.Message);
    }
}
