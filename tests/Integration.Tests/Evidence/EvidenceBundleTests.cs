using System.Formats.Tar;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Configuration;
using Npgsql;
using NSec.Cryptography;
using Sandbox.Audited.Api.Hosting;
using Sandbox.Audited.Domain.Merkle;
using Sandbox.Audited.Tests.Audit;
using Sandbox.Audited.Tests.Infrastructure;
using Sandbox.Audited.Verifier;
using Xunit.Abstractions;

namespace Sandbox.Audited.Tests.Evidence;

/// <summary>
/// GET /v1/runs/{id}/evidence of a real run, checked with sbx-verify --bundle and the service's published key: it
/// verifies as downloaded, and each part altered (with the manifest rewritten to match, as a forger would) fails with
/// the check that catches it.
/// </summary>
[Collection(ServiceCollection.Name)]
public sealed class EvidenceBundleTests(ServiceFixture service, ITestOutputHelper log) : IDisposable
{
    private const string Code = """
        import os
        data = open('in.txt').read()
        os.makedirs('out', exist_ok=True)
        with open('out/report.txt', 'w') as f:
            f.write('report of ' + data)
        print('done')
        """;

    private static readonly SemaphoreSlim Once = new(1, 1);
    private static Bundle? _shared;

    private readonly string _directory = Directory.CreateTempSubdirectory("sbx-bundle-test-").FullName;

    private sealed record Bundle(string Tenant, Guid RunId, JsonNode Run, byte[] Tar, string KeyJson);

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    /// <summary>One run with an input file and an artifact, its bundle and the published key, shared by the tamper cases.</summary>
    private async Task<Bundle> SharedAsync()
    {
        await Once.WaitAsync();
        try
        {
            return _shared ??= await RunAndDownloadAsync(AuditTestClient.NewTenant("ev-bundle2"));
        }
        finally
        {
            Once.Release();
        }
    }

    private async Task<Bundle> RunAndDownloadAsync(string tenant)
    {
        var (response, run) = await service.Runner("alice", tenant).RunAsync(new
        {
            language = "python", code = Code, files = new[] { new { name = "in.txt", content = "ledger 2026" } },
        });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("done\n", run.Str("stdout.content"));
        var id = Guid.Parse(run.Str("runId"));
        return new Bundle(tenant, id, run, await DownloadAsync(tenant, id), await KeyJsonAsync(tenant));
    }

    /// <summary>The sandbox's removal is recorded on the run's stream after the answer; a bundle is a snapshot, so wait for it.</summary>
    private async Task SettledAsync(Guid id)
    {
        for (var i = 0; i < 200; i++)
        {
            if (await service.Database.ScalarAsync<long>(
                    "SELECT count(*) FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'sandbox_removed'", id) > 0)
                return;
            await Task.Delay(50);
        }
        Assert.Fail($"run {id}: sandbox_removed was not recorded within 10 s");
    }

    private async Task<byte[]> DownloadAsync(string tenant, Guid id)
    {
        await SettledAsync(id);
        var response = await service.Auditor(tenant).GetAsync($"/v1/runs/{id}/evidence");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return await response.Content.ReadAsByteArrayAsync();
    }

    private async Task<string> KeyJsonAsync(string tenant)
    {
        var response = await service.Auditor(tenant).GetAsync("/v1/audit/checkpoints/key");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return await response.Content.ReadAsStringAsync();
    }

    private string Write(string name, byte[] bytes)
    {
        var path = Path.Combine(_directory, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private (int Exit, string Output) Verify(byte[] tar, string? keyText, params string[] more)
    {
        var args = new List<string> { "--bundle", Write($"bundle-{Guid.NewGuid():N}.tar", tar) };
        if (keyText is not null)
            args.AddRange(["--key", Write($"key-{Guid.NewGuid():N}.json", Encoding.UTF8.GetBytes(keyText))]);
        args.AddRange(more);
        using var output = new StringWriter();
        var exit = VerifyCommand.Run([.. args], output);
        return (exit, output.ToString());
    }

    private static Dictionary<string, byte[]> Files(byte[] tar)
    {
        var files = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        using var reader = new TarReader(new MemoryStream(tar));
        while (reader.GetNextEntry(copyData: true) is { } entry)
        {
            using var data = new MemoryStream();
            entry.DataStream?.CopyTo(data);
            files[entry.Name] = data.ToArray();
        }
        return files;
    }

    /// <summary>The bundle with one file changed and the manifest's SHA-256 for it rewritten, so that only the semantic checks can catch it.</summary>
    private static byte[] Tampered(byte[] tar, string name, Func<byte[], byte[]> change)
    {
        var files = Files(tar);
        Assert.True(files.ContainsKey(name), $"{name} is not in the bundle: {string.Join(", ", files.Keys)}");
        files[name] = change(files[name]);
        var manifest = JsonNode.Parse(files["manifest.json"])!;
        foreach (var file in manifest["files"]!.AsArray().OfType<JsonNode>())
            if (file.Str("path") == name)
            {
                file["sha256"] = Convert.ToHexStringLower(SHA256.HashData(files[name]));
                file["bytes"] = files[name].Length;
            }
        files["manifest.json"] = Encoding.UTF8.GetBytes(manifest.ToJsonString());
        using var target = new MemoryStream();
        using (var writer = new TarWriter(target, TarEntryFormat.Pax, leaveOpen: true))
            foreach (var (path, bytes) in files)
                writer.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, path) { DataStream = new MemoryStream(bytes) });
        return target.ToArray();
    }

    private static byte[] Replace(byte[] bytes, string from, string to)
    {
        var text = Encoding.UTF8.GetString(bytes);
        Assert.Contains(from, text);
        var at = text.IndexOf(from, StringComparison.Ordinal);
        return Encoding.UTF8.GetBytes(text[..at] + to + text[(at + from.Length)..]);
    }

    private static void Fails(int exit, string output, string check, string message)
    {
        Assert.True(exit == VerifyCommand.NotVerified, output);
        var line = output.Split('\n').FirstOrDefault(l => l.StartsWith("FAIL  " + check, StringComparison.Ordinal));
        Assert.True(line is not null, $"no FAIL line for '{check}':\n{output}");
        Assert.Contains(message, line);
    }

    [Fact]
    public async Task TheBundleOfARealRunVerifiesWithThePublishedKey()
    {
        var bundle = await SharedAsync();
        var files = Files(bundle.Tar);

        var (exit, output) = Verify(bundle.Tar, bundle.KeyJson);
        log.WriteLine(output);

        Assert.True(exit == VerifyCommand.Verified, output);
        Assert.Contains("VERIFIED: all", output);
        Assert.Contains("6 contents match", output); // code, stdin, in.txt, stdout, stderr, report.txt
        Assert.Contains("PASS  sbom", output);
        Assert.Contains("runtime python: the SBOM hashes to sha256:", output);
        Assert.Contains("PASS  policy", output);
        Assert.Contains("PASS  inclusion", output);
        Assert.Contains("PASS  checkpoint signature", output);
        Assert.Contains("the key you gave", output);
        Assert.Contains($"PASS  checkpoint origin", output);
        Assert.Contains(bundle.Tenant, output);

        // Every event of the run has its proof, and the checkpoint is the service's, signed for this tenant.
        var manifest = JsonNode.Parse(files["manifest.json"])!;
        Assert.Equal("sandbox-audited-evidence/2", manifest.Str("format"));
        var events = Encoding.UTF8.GetString(files["events.ndjson"]).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var proofs = JsonNode.Parse(files["proofs/inclusion.json"])!;
        Assert.Equal(events.Length, proofs["proofs"]!.AsArray().Count);
        var checkpoints = await service.Auditor(bundle.Tenant).OkJsonAsync("/v1/audit/checkpoints");
        var checkpoint = JsonNode.Parse(files["proofs/checkpoint.json"])!;
        Assert.Contains(checkpoints.AsArray().OfType<JsonNode>(), c => c.Str("rootHash") == checkpoint.Str("rootHash") && c.Str("note") == checkpoint.Str("note"));
        Assert.Equal(proofs.Str("rootHash"), checkpoint.Str("rootHash"));
        var sbom = Assert.Single(files.Keys, k => k.StartsWith("sbom/", StringComparison.Ordinal));
        var created = JsonNode.Parse(events.Single(e => e.Contains("\"type\":\"sandbox_created\"", StringComparison.Ordinal)))!;
        Assert.Equal($"sbom/{created.Str("data.sbomDigest")["sha256:".Length..]}.spdx.json", sbom);
    }

    [Fact]
    public async Task ABundleOfARunNoCheckpointCoversYetTakesOneAndTheNextReusesIt()
    {
        var tenant = AuditTestClient.NewTenant("ev-bundle-fresh");
        var (_, run) = await service.Runner("bob", tenant).RunAsync(new { language = "shell", code = "echo fresh" });
        var id = Guid.Parse(run.Str("runId"));
        Assert.Empty((await service.Auditor(tenant).OkJsonAsync("/v1/audit/checkpoints")).AsArray());

        var first = JsonNode.Parse(Files(await DownloadAsync(tenant, id))["manifest.json"])!;
        var second = JsonNode.Parse(Files(await DownloadAsync(tenant, id))["manifest.json"])!;

        Assert.True(first["checkpoint"]!["takenForThisBundle"]!.GetValue<bool>());
        Assert.False(second["checkpoint"]!["takenForThisBundle"]!.GetValue<bool>());
        Assert.Equal(first.Str("checkpoint.rootHash"), second.Str("checkpoint.rootHash"));
        var recorded = Assert.Single((await service.Auditor(tenant).OkJsonAsync("/v1/audit/checkpoints")).AsArray());
        Assert.Equal("system:evidence-bundle", recorded!.Str("subject"));
    }

    [Fact]
    public async Task WithoutAKeyTheBundleOnlyVerifiesAgainstItsOwnKeyAndSaysSo()
    {
        var bundle = await SharedAsync();

        var (exit, output) = Verify(bundle.Tar, null);

        Assert.True(exit == VerifyCommand.VerifiedWithBundleKeyOnly, output);
        Assert.Contains("the key the bundle carries (it only names the signer", output);
        Assert.Contains("NOTE  no --key given", output);
        Assert.Contains("VERIFIED WITH THE BUNDLE'S OWN KEY ONLY", output);
    }

    [Fact]
    public async Task AnAlteredEventFailsTheHashChain()
    {
        var bundle = await SharedAsync();
        var altered = Tampered(bundle.Tar, "events.ndjson", b => Replace(b, "\"python\"", "\"shell\""));

        var (exit, output) = Verify(altered, bundle.KeyJson);

        Fails(exit, output, "events: hash chains", "hash mismatch");
    }

    [Fact]
    public async Task AnAlteredInputFailsTheContentCheck()
    {
        var bundle = await SharedAsync();
        var input = Convert.ToHexStringLower(SHA256.HashData("ledger 2026"u8));
        var altered = Tampered(bundle.Tar, "content/" + input, _ => "ledger 2027"u8.ToArray());

        var (exit, output) = Verify(altered, bundle.KeyJson);

        Fails(exit, output, "content", $"file:in.txt: content/{input} does not hash to the digest the events record");
    }

    [Fact]
    public async Task AnAlteredArtifactFailsTheContentCheck()
    {
        var bundle = await SharedAsync();
        var artifact = Convert.ToHexStringLower(SHA256.HashData("report of ledger 2026"u8));
        var altered = Tampered(bundle.Tar, "content/" + artifact, _ => "report of nothing"u8.ToArray());

        var (exit, output) = Verify(altered, bundle.KeyJson);

        Fails(exit, output, "content", $"artifact:report.txt: content/{artifact} does not hash to the digest the events record");
    }

    [Fact]
    public async Task AnAlteredSbomFailsAgainstTheDigestSandboxCreatedRecords()
    {
        var bundle = await SharedAsync();
        var sbom = Files(bundle.Tar).Keys.Single(k => k.StartsWith("sbom/", StringComparison.Ordinal));
        var altered = Tampered(bundle.Tar, sbom, b => Replace(b, "python3", "python4"));

        var (exit, output) = Verify(altered, bundle.KeyJson);

        Fails(exit, output, "sbom", "not to the SBOM digest sandbox_created records");
    }

    [Fact]
    public async Task AnAlteredProofHashFailsInclusion()
    {
        var bundle = await SharedAsync();
        var altered = Tampered(bundle.Tar, "proofs/inclusion.json", b =>
        {
            var proofs = JsonNode.Parse(b)!;
            var path = proofs["proofs"]![0]!["auditPath"]!.AsArray();
            var hash = path[0]!.GetValue<string>();
            path[0] = (hash[0] == '0' ? "1" : "0") + hash[1..];
            return Encoding.UTF8.GetBytes(proofs.ToJsonString());
        });

        var (exit, output) = Verify(altered, bundle.KeyJson);

        Fails(exit, output, "inclusion", "the audit path does not lead from its leaf");
    }

    [Fact]
    public async Task AnAlteredCheckpointSignatureFails()
    {
        var bundle = await SharedAsync();
        var altered = Tampered(bundle.Tar, "proofs/checkpoint.json", b =>
        {
            var checkpoint = JsonNode.Parse(b)!;
            var note = checkpoint.Str("note");
            var line = note.TrimEnd('\n').Split('\n')[^1];
            var blob = Convert.FromBase64String(line.Split(' ')[^1]);
            blob[^1] ^= 0x01;
            checkpoint["note"] = note.Replace(line.Split(' ')[^1], Convert.ToBase64String(blob), StringComparison.Ordinal);
            return Encoding.UTF8.GetBytes(checkpoint.ToJsonString());
        });

        var (exit, output) = Verify(altered, bundle.KeyJson);

        Fails(exit, output, "checkpoint signature", "does not verify: the note was changed or not signed by that key");
    }

    [Fact]
    public async Task AnotherKeyThanTheSignersFails()
    {
        var bundle = await SharedAsync();
        var name = JsonNode.Parse(bundle.KeyJson)!["noteKeys"]![0]!.Str("name");
        using var other = Key.Create(SignatureAlgorithm.Ed25519);
        var otherKey = NoteVerifierKey.For(name, other.PublicKey.Export(KeyBlobFormat.RawPublicKey));

        var (exit, output) = Verify(bundle.Tar, otherKey + "\n");

        Assert.Contains("keys ", output);
        Fails(exit, output, "checkpoint signature", "no signature by a known key");
    }

    [Fact]
    public async Task ACheckpointOfAnotherLogFailsTheOriginCheck()
    {
        var bundle = await SharedAsync();

        var (exit, output) = Verify(bundle.Tar, bundle.KeyJson, "--origin", "sandbox-audited/some-other-tenant");

        Fails(exit, output, "checkpoint origin", "not of \"sandbox-audited/some-other-tenant\"");
    }

    [Fact]
    public async Task AnErasedArtifactVerifiesAsErased()
    {
        var tenant = AuditTestClient.NewTenant("ev-bundle-erase");
        var (response, run) = await service.Runner("carol", tenant).RunAsync(new
        {
            language = "python", code = Code, files = new[] { new { name = "in.txt", content = "personal data of bob" } },
        });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var id = Guid.Parse(run.Str("runId"));
        var before = await DownloadAsync(tenant, id); // checkpointed before the erasure, so the erasure event is newer than it
        var artifact = Convert.ToHexStringLower(SHA256.HashData("report of personal data of bob"u8));
        Assert.Contains("content/" + artifact, Files(before).Keys);

        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["ConnectionStrings:Eraser"] = new NpgsqlConnectionStringBuilder(service.Database.AdminConnection) { Options = "-c role=sandbox_eraser" }.ConnectionString,
        }).Build();
        Assert.Equal(0, await Commands.RunAsync(["erase", "--tenant", tenant, "--digest", artifact, "--reason", "data-subject request 7", "--by", "dpo"], configuration));

        var after = await DownloadAsync(tenant, id);
        var files = Files(after);
        Assert.DoesNotContain("content/" + artifact, files.Keys);
        Assert.True(JsonNode.Parse(files["manifest.json"])!["checkpoint"]!["takenForThisBundle"]!.GetValue<bool>());
        var (exit, output) = Verify(after, await KeyJsonAsync(tenant));

        Assert.True(exit == VerifyCommand.Verified, output);
        Assert.Contains("1 erased by recorded erasure events (artifact:report.txt)", output);
        Assert.Contains("PASS  erasures: hash chains", output);
        var erasures = Encoding.UTF8.GetString(files["erasures.ndjson"]).Split('\n', StringSplitOptions.RemoveEmptyEntries).Length;
        var events = Encoding.UTF8.GetString(files["events.ndjson"]).Split('\n', StringSplitOptions.RemoveEmptyEntries).Length;
        Assert.Contains($"all {events + erasures} events are in the tenant's tree", output);
    }
}
