using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using NSec.Cryptography;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Merkle;
using Sandbox.Audited.Domain.Policies;

namespace Sandbox.Audited.Domain.Tests.Hashing;

/// <summary>
/// The bundle checks over a bundle built here as the service writes one (a run's events among other leaves of the
/// tenant's tree, its content, SBOM, policy files, proofs from the RFC's own PATH and a signed note): intact it
/// verifies; each part changed fails its named check.
/// </summary>
public sealed class EvidenceBundleVerifierTests : IDisposable
{
    private const string Tenant = "acme";
    private const string LogName = "sandbox-audited";
    private static readonly Guid Run = Guid.Parse("33333333-3333-3333-3333-333333333333");

    private readonly Key _key = Key.Create(SignatureAlgorithm.Ed25519);
    private readonly NoteVerifierKey _verifier;

    public EvidenceBundleVerifierTests() => _verifier = NoteVerifierKey.For(LogName, _key.PublicKey.Export(KeyBlobFormat.RawPublicKey));

    public void Dispose() => _key.Dispose();

    private static string Sha(string text) => Sha256Hex.Of(text);

    private const string Code = "print(open('in.txt').read())";
    private const string Input = "ledger";
    private const string Stdout = "ledger\n";
    private const string Artifact = "report";
    private const string Sbom = """{"spdxVersion":"SPDX-2.3","packages":[{"name":"python3","versionInfo":"3.11.2-1"}]}""";
    private const string Policy = "rules: []\n";

    private Dictionary<string, byte[]> Bundle(string? origin = null)
    {
        var policyDigest = PolicyBundle.ComputeDigest([("policy.yaml", Sha(Policy))]);
        var data = new[]
        {
            ("run_requested", $$"""{"caller":{"tenant":"{{Tenant}}"},"inputsStored":true,"codeSha256":"{{Sha(Code)}}","stdinSha256":"{{Sha("")}}","files":[{"name":"in.txt","sha256":"{{Sha(Input)}}"}]}"""),
            ("policy_evaluated", $$"""{"decision":"allow","bundleDigest":"{{policyDigest}}"}"""),
            ("sandbox_created", $$"""{"runtimeId":"python","sbomDigest":"sha256:{{Sha(Sbom)}}"}"""),
            ("artifact_recorded", $$"""{"name":"report.txt","sha256":"{{Sha(Artifact)}}"}"""),
            ("output_recorded", $$$"""{"stdout":{"stored":true,"sha256":"{{{Sha(Stdout)}}}"},"stderr":{"stored":true,"sha256":"{{{Sha("")}}}"}}"""),
        };
        // Leaves of other streams of the tenant before, between and after the run's events.
        var leaves = new List<byte[]>();
        var lines = new List<string>();
        var sequences = new List<(long Sequence, int Leaf)>();
        var previous = EventChain.Genesis;
        long sequence = 10;
        for (var i = 0; i < data.Length; i++)
        {
            for (var filler = 0; filler < 2; filler++)
                leaves.Add(MerkleTree.EventLeaf(sequence++, Guid.NewGuid(), 1, new string('a', 64)));
            var (type, json) = data[i];
            var hash = EventChain.Hash(previous, Run, i + 1, type, json);
            lines.Add(new JsonObject
            {
                ["sequence"] = sequence, ["streamId"] = Run.ToString(), ["version"] = i + 1, ["type"] = type, ["tenant"] = Tenant,
                ["hash"] = hash, ["prevHash"] = previous, ["canon"] = "jcs", ["data"] = JsonNode.Parse(json),
            }.ToJsonString());
            sequences.Add((sequence, leaves.Count));
            leaves.Add(MerkleTree.EventLeaf(sequence++, Run, i + 1, hash));
            previous = hash;
        }
        leaves.Add(MerkleTree.EventLeaf(sequence, Guid.NewGuid(), 1, null));
        var all = leaves.ToArray();
        var root = Rfc9162.Root(all);
        var proofs = new
        {
            treeSize = all.Length, rootHash = Convert.ToHexStringLower(root),
            proofs = sequences.Select(s => new { sequence = s.Sequence, leafIndex = s.Leaf, auditPath = Rfc9162.Path(s.Leaf, all).Select(Convert.ToHexStringLower) }),
        };
        var text = new CheckpointBody(origin ?? CheckpointBody.OriginOf(LogName, Tenant), all.Length, root).Text;
        var note = SignedNote.Assemble(text, [SignedNote.SignatureLine(_verifier, SignatureAlgorithm.Ed25519.Sign(_key, Encoding.UTF8.GetBytes(text)))]);
        var files = new Dictionary<string, byte[]>(StringComparer.Ordinal)
        {
            ["events.ndjson"] = Encoding.UTF8.GetBytes(string.Join("\n", lines) + "\n"),
            ["content/" + Sha(Code)] = Encoding.UTF8.GetBytes(Code),
            ["content/" + Sha("")] = [],
            ["content/" + Sha(Input)] = Encoding.UTF8.GetBytes(Input),
            ["content/" + Sha(Stdout)] = Encoding.UTF8.GetBytes(Stdout),
            ["content/" + Sha(Artifact)] = Encoding.UTF8.GetBytes(Artifact),
            [$"policy/{policyDigest}/policy.yaml"] = Encoding.UTF8.GetBytes(Policy),
            [$"sbom/{Sha(Sbom)}.spdx.json"] = Encoding.UTF8.GetBytes(Sbom),
            [EvidenceBundleVerifier.InclusionFile] = JsonSerializer.SerializeToUtf8Bytes(proofs),
            [EvidenceBundleVerifier.CheckpointFile] = JsonSerializer.SerializeToUtf8Bytes(new { sequence = 99, treeSize = all.Length, rootHash = Convert.ToHexStringLower(root), note }),
            [EvidenceBundleVerifier.KeysFile] = JsonSerializer.SerializeToUtf8Bytes(new { noteKeys = new[] { new { verifierKey = _verifier.ToString() } } }),
        };
        return WithManifest(files);
    }

    private static Dictionary<string, byte[]> WithManifest(Dictionary<string, byte[]> files)
    {
        files.Remove(EvidenceBundleVerifier.Manifest);
        files[EvidenceBundleVerifier.Manifest] = JsonSerializer.SerializeToUtf8Bytes(new
        {
            files = files.Select(f => new { path = f.Key, sha256 = Sha256Hex.Of(f.Value) }).ToList(),
        });
        return files;
    }

    private static Dictionary<string, byte[]> Changed(Dictionary<string, byte[]> files, string path, Func<string, string> change)
    {
        files[path] = Encoding.UTF8.GetBytes(change(Encoding.UTF8.GetString(files[path])));
        return WithManifest(files);
    }

    private EvidenceBundleReport Verify(Dictionary<string, byte[]> files, string? origin = null) =>
        EvidenceBundleVerifier.Verify(files, [_verifier], origin);

    private static VerifierCheck Failed(EvidenceBundleReport report, string name)
    {
        var failed = report.Checks.Where(c => !c.Passed).ToList();
        Assert.True(failed.Count == 1, string.Join("\n", report.Checks.Select(c => $"{c.Passed} {c.Name}: {c.Detail}")));
        Assert.Equal(name, failed[0].Name);
        return failed[0];
    }

    [Fact]
    public void AnIntactBundleVerifiesEveryPart()
    {
        var report = Verify(Bundle());

        Assert.All(report.Checks, c => Assert.True(c.Passed, $"{c.Name}: {c.Detail}"));
        Assert.False(report.CheckedWithBundleKey);
        Assert.Equal(["manifest", "events: order", "events: tenant", "events: hash chains", "content", "sbom", "policy", "inclusion",
            "checkpoint signature", "checkpoint origin"], report.Checks.Select(c => c.Name));
        Assert.Contains("all 5 events are in the tenant's tree of 16 leaves", report.Checks.Single(c => c.Name == "inclusion").Detail);
    }

    [Fact]
    public void WithoutTrustedKeysTheBundlesOwnKeyIsUsedAndTheReportSaysSo()
    {
        var report = EvidenceBundleVerifier.Verify(Bundle());

        Assert.All(report.Checks, c => Assert.True(c.Passed, $"{c.Name}: {c.Detail}"));
        Assert.True(report.CheckedWithBundleKey);
        Assert.Contains("the key the bundle carries", report.Checks.Single(c => c.Name == "checkpoint signature").Detail);
    }

    [Fact]
    public void AChangedSbomFailsTheSbomCheck() =>
        Assert.Contains("not to the SBOM digest sandbox_created records",
            Failed(Verify(Changed(Bundle(), $"sbom/{Sha(Sbom)}.spdx.json", s => s.Replace("3.11.2-1", "3.11.9-1", StringComparison.Ordinal))), "sbom").Detail);

    [Fact]
    public void AChangedPolicyFileFailsThePolicyCheck()
    {
        var files = Bundle();
        var path = files.Keys.Single(k => k.StartsWith("policy/", StringComparison.Ordinal));

        Assert.Contains("a policy file changed", Failed(Verify(Changed(files, path, _ => "rules: [allow-all]\n")), "policy").Detail);
    }

    [Fact]
    public void AChangedAuditPathHashFailsInclusion() =>
        Assert.Contains("the audit path does not lead from its leaf",
            Failed(Verify(Changed(Bundle(), EvidenceBundleVerifier.InclusionFile, s =>
            {
                var proofs = JsonNode.Parse(s)!;
                var path = proofs["proofs"]![2]!["auditPath"]!.AsArray();
                path[1] = new string('f', 64);
                return proofs.ToJsonString();
            })), "inclusion").Detail);

    [Fact]
    public void AMissingProofFailsInclusion() =>
        Assert.Contains("no inclusion proof",
            Failed(Verify(Changed(Bundle(), EvidenceBundleVerifier.InclusionFile, s =>
            {
                var proofs = JsonNode.Parse(s)!;
                proofs["proofs"]!.AsArray().RemoveAt(4);
                return proofs.ToJsonString();
            })), "inclusion").Detail);

    [Fact]
    public void ANoteOfAnotherTenantsLogFailsTheOriginCheck() =>
        Assert.Contains("not of \"sandbox-audited/acme\"", Failed(Verify(Bundle(origin: "sandbox-audited/other")), "checkpoint origin").Detail);

    [Fact]
    public void AGivenOriginIsTheOneChecked() =>
        Assert.Contains("not of \"example.test/log\"", Failed(Verify(Bundle(), origin: "example.test/log"), "checkpoint origin").Detail);

    [Fact]
    public void AnotherKeyFailsTheSignatureAndSoTheProofsHaveNoRoot()
    {
        using var other = Key.Create(SignatureAlgorithm.Ed25519);
        var report = EvidenceBundleVerifier.Verify(Bundle(), [NoteVerifierKey.For(LogName, other.PublicKey.Export(KeyBlobFormat.RawPublicKey))]);

        var failed = report.Checks.Where(c => !c.Passed).ToDictionary(c => c.Name, c => c.Detail);
        Assert.Contains("no signature by a known key", failed["checkpoint signature"]);
        Assert.Contains("no verified checkpoint root", failed["inclusion"]);
    }

    [Fact]
    public void ANoteKeyFileMayBeOneVerifierKeyALine()
    {
        var keys = CheckpointNotes.ParseKeys($"# the service's key\n{_verifier}\n");

        Assert.Equal([_verifier.ToString()], keys.Select(k => k.ToString()));
    }
}
