using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Npgsql;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Audit;

/// <summary>
/// Inclusion and consistency proofs served from the stored tree, checked here with the verification algorithms of
/// RFC 9162 (sections 2.1.3.2 and 2.1.4.2) written in the test, against the roots of signed checkpoints.
/// </summary>
[Collection(ServiceCollection.Name)]
public sealed class ProofTests(ServiceFixture service)
{
    private static byte[] Node(byte[] left, byte[] right) => SHA256.HashData([1, .. left, .. right]);

    private static bool VerifyInclusion(long index, long size, byte[] leafHash, IReadOnlyList<byte[]> path, byte[] root)
    {
        if (index >= size)
            return false;
        var (fn, sn, r) = (index, size - 1, leafHash);
        foreach (var p in path)
        {
            if (sn == 0)
                return false;
            if ((fn & 1) == 1 || fn == sn)
            {
                r = Node(p, r);
                while ((fn & 1) == 0 && fn != 0)
                    (fn, sn) = (fn >> 1, sn >> 1);
            }
            else
                r = Node(r, p);
            (fn, sn) = (fn >> 1, sn >> 1);
        }
        return sn == 0 && r.AsSpan().SequenceEqual(root);
    }

    private static bool VerifyConsistency(long first, long second, IReadOnlyList<byte[]> proof, byte[] firstRoot, byte[] secondRoot)
    {
        if (first == second)
            return proof.Count == 0 && firstRoot.AsSpan().SequenceEqual(secondRoot);
        if (first == 0 || first > second || proof.Count == 0)
            return first == 0 && proof.Count == 0;
        var path = (first & (first - 1)) == 0 ? [firstRoot, .. proof] : proof.ToList();
        var (fn, sn) = (first - 1, second - 1);
        while ((fn & 1) == 1)
            (fn, sn) = (fn >> 1, sn >> 1);
        var (fr, sr) = (path[0], path[0]);
        foreach (var c in path.Skip(1))
        {
            if (sn == 0)
                return false;
            if ((fn & 1) == 1 || fn == sn)
            {
                (fr, sr) = (Node(c, fr), Node(c, sr));
                while ((fn & 1) == 0 && fn != 0)
                    (fn, sn) = (fn >> 1, sn >> 1);
            }
            else
                sr = Node(sr, c);
            (fn, sn) = (fn >> 1, sn >> 1);
        }
        return sn == 0 && fr.AsSpan().SequenceEqual(firstRoot) && sr.AsSpan().SequenceEqual(secondRoot);
    }

    private static byte[] Hex(JsonNode? node) => Convert.FromHexString(node!.GetValue<string>());

    private static List<byte[]> Hashes(JsonNode? array) => array!.AsArray().Select(Hex).ToList();

    private async Task<JsonNode> CheckpointAsync(string tenant)
    {
        var response = await service.Auditor(tenant).PostAsync("/v1/audit/checkpoints", null);
        var body = await ApiCalls.BodyAsync(response);
        Assert.True(response.StatusCode == HttpStatusCode.Created, body.ToJsonString());
        return body;
    }

    [Fact]
    public async Task EveryEventOfARunIsProvenInTheSignedCheckpointsTree()
    {
        var tenant = AuditTestClient.NewTenant("proof-run");
        await AuditSeed.RunAsync(service, tenant, "ann");
        var run = await AuditSeed.RunAsync(service, tenant, "bob");
        await AuditSeed.RunAsync(service, AuditTestClient.NewTenant("proof-other"), "eve");
        var checkpoint = await CheckpointAsync(tenant);

        var proof = await service.Auditor(tenant).OkJsonAsync($"/v1/audit/proofs/inclusion?runId={run}&treeSize={checkpoint.Str("treeSize")}");
        var single = await service.Auditor(tenant).OkJsonAsync($"/v1/audit/proofs/inclusion?sequence={proof["proofs"]![3]!.Str("sequence")}");

        var root = Hex(checkpoint["rootHash"]);
        var size = long.Parse(checkpoint.Str("treeSize"));
        Assert.Equal(checkpoint.Str("rootHash"), proof.Str("rootHash"));
        var proofs = proof["proofs"]!.AsArray();
        Assert.Equal(8, proofs.Count);
        Assert.Equal(Enumerable.Range(1, 8).Select(v => v.ToString()), proofs.Select(p => p!.Str("version")));
        foreach (var p in proofs.Select(p => p!))
        {
            var leafHash = SHA256.HashData([0, .. System.Text.Encoding.UTF8.GetBytes(p.Str("leafData"))]);
            Assert.Equal(p.Str("leafHash"), Convert.ToHexStringLower(leafHash));
            Assert.StartsWith($"{p.Str("sequence")}:{run}:{p.Str("version")}:", p.Str("leafData"));
            Assert.True(VerifyInclusion(long.Parse(p.Str("leafIndex")), size, leafHash, Hashes(p["auditPath"]), root), p.ToJsonString());
            Assert.False(VerifyInclusion(long.Parse(p.Str("leafIndex")), size, SHA256.HashData([0, 1]), Hashes(p["auditPath"]), root));
        }
        Assert.Equal(checkpoint.Str("treeSize"), single.Str("treeSize")); // the latest checkpoint's size by default
        Assert.Equal(proofs[3]!.ToJsonString(), single["proofs"]![0]!.ToJsonString());
    }

    [Fact]
    public async Task AnEventAfterTheCheckpointIsNotCoveredByItsTree()
    {
        var tenant = AuditTestClient.NewTenant("proof-late");
        await AuditSeed.RunAsync(service, tenant, "ann");
        var checkpoint = await CheckpointAsync(tenant);
        var late = await AuditSeed.RunAsync(service, tenant, "ann");

        var (beforeCheckpoint, notYet) = await service.Auditor(tenant).GetJsonAsync($"/v1/audit/proofs/inclusion?runId={late}");
        var next = await CheckpointAsync(tenant);
        var (oldTree, notCovered) = await service.Auditor(tenant).GetJsonAsync($"/v1/audit/proofs/inclusion?runId={late}&treeSize={checkpoint.Str("treeSize")}");
        var (tooBig, noSuchTree) = await service.Auditor(tenant).GetJsonAsync($"/v1/audit/proofs/inclusion?runId={late}&treeSize=1000000");
        var stranger = AuditTestClient.NewTenant("proof-stranger");
        var (otherTenant, notYours) = await service.Auditor(stranger, "stan").GetJsonAsync($"/v1/audit/proofs/inclusion?runId={late}&treeSize=1");
        var covered = await service.Auditor(tenant).OkJsonAsync($"/v1/audit/proofs/inclusion?runId={late}&treeSize={next.Str("treeSize")}");

        Assert.Equal(HttpStatusCode.NotFound, beforeCheckpoint.StatusCode);
        Assert.Contains("no checkpoint was taken since", notYet.Str("detail"));
        Assert.Equal(HttpStatusCode.NotFound, oldTree.StatusCode);
        Assert.Contains($"a tree of {checkpoint.Str("treeSize")} leaves does not cover it", notCovered.Str("detail"));
        Assert.Equal(HttpStatusCode.NotFound, tooBig.StatusCode);
        Assert.Contains("does not exist yet", noSuchTree.Str("detail"));
        Assert.Equal(HttpStatusCode.NotFound, otherTenant.StatusCode);
        Assert.Equal(8, covered["proofs"]!.AsArray().Count);
        // A probe that found nothing is an access too: logged, with no result.
        var probes = (await service.Auditor(stranger, "stan").OkJsonAsync("/v1/audit/events?type=audit_accessed&subject=stan"))["items"]!.AsArray();
        Assert.Contains(probes, e => (e!.Str("data.action"), e!.Str("data.resultCount")) == ("inclusion_proof", "0"));
    }

    [Fact]
    public async Task TwoScheduledCheckpointsAreProvenConsistent()
    {
        var tenant = service.ScheduledTenant;
        var auditor = service.Auditor(tenant);
        async Task<JsonArray> Scheduled() => (await auditor.OkJsonAsync("/v1/audit/checkpoints")).AsArray();

        await AuditSeed.RunAsync(service, tenant, "sam");
        await Eventually.WaitUntilAsync(async () => (await Scheduled()).Count >= 1, () => "no scheduled checkpoint within 30 s", TimeSpan.FromSeconds(30), 250);
        var before = (await Scheduled()).Count;
        await AuditSeed.RunAsync(service, tenant, "sam");
        await Eventually.WaitUntilAsync(async () => (await Scheduled()).Count > before, () => "no second scheduled checkpoint within 30 s", TimeSpan.FromSeconds(30), 250);
        var list = await Scheduled();
        var (first, second) = (list[^2]!, list[^1]!);
        var proof = await auditor.OkJsonAsync($"/v1/audit/proofs/consistency?first={first.Str("treeSize")}&second={second.Str("treeSize")}");

        Assert.All(list, c => Assert.Equal("system:checkpoint-schedule", c!.Str("subject")));
        Assert.True(long.Parse(second.Str("treeSize")) > long.Parse(first.Str("treeSize")));
        Assert.Equal(first.Str("treeSize"), second.Str("previousTreeSize"));
        Assert.Equal(second["consistencyProof"]!.ToJsonString(), proof["proof"]!.ToJsonString()); // recorded with the head
        Assert.True(VerifyConsistency(long.Parse(first.Str("treeSize")), long.Parse(second.Str("treeSize")), Hashes(proof["proof"]),
            Hex(first["rootHash"]), Hex(second["rootHash"])), proof.ToJsonString());
        Assert.False(VerifyConsistency(long.Parse(first.Str("treeSize")), long.Parse(second.Str("treeSize")), Hashes(proof["proof"]),
            Hex(second["rootHash"]), Hex(first["rootHash"])));
    }

    [Fact]
    public async Task NothingChangedMeansNoScheduledCheckpoint()
    {
        var schedule = (Sandbox.Audited.Audit.Trail.CheckpointSchedule)service.Services.GetService(typeof(Sandbox.Audited.Audit.Trail.CheckpointSchedule))!;
        var checkpoints = (Sandbox.Audited.Audit.Trail.AuditCheckpoints)service.Services.GetService(typeof(Sandbox.Audited.Audit.Trail.AuditCheckpoints))!;
        var quiet = AuditTestClient.NewTenant("proof-quiet");
        await AuditSeed.RunAsync(service, quiet, "qi");
        var caller = new Sandbox.Audited.Domain.Runs.Caller(Sandbox.Audited.Audit.Trail.CheckpointSchedule.Subject, quiet, []);

        var firstTime = await checkpoints.CreateIfChangedAsync(caller, CancellationToken.None);
        var again = await checkpoints.CreateIfChangedAsync(caller, CancellationToken.None); // only its own checkpoint is new

        Assert.NotNull(schedule);
        Assert.NotNull(firstTime);
        Assert.Null(again);
    }

    [Fact]
    public async Task TheSignedNoteVerifiesWithNodeCryptoAndTheServedKey()
    {
        var tenant = AuditTestClient.NewTenant("proof-note");
        await AuditSeed.RunAsync(service, tenant, "ann");
        var checkpoint = await CheckpointAsync(tenant);
        var key = await service.Auditor(tenant).OkJsonAsync("/v1/audit/checkpoints/key");
        var noteKey = key["noteKeys"]![0]!;
        var note = checkpoint.Str("note");

        Assert.Equal($"sandbox-audited/{service.NodeId}/{tenant}", key.Str("noteOrigin"));
        Assert.StartsWith($"{key.Str("noteOrigin")}\n{checkpoint.Str("treeSize")}\n{Convert.ToBase64String(Convert.FromHexString(checkpoint.Str("rootHash")))}\n\n\u2014 {noteKey.Str("name")} ", note);
        var script = """
            const crypto = require('node:crypto');
            const [note, name, keyB64] = [process.env.NOTE, process.env.NAME, process.env.KEY];
            const split = note.lastIndexOf('\n\n');
            const text = Buffer.from(note.slice(0, split + 1), 'utf8');
            const line = note.slice(split + 2).split('\n')[0];
            const prefix = '\u2014 ' + name + ' ';
            if (!line.startsWith(prefix)) { console.log('no signature line by ' + name); process.exit(2); }
            const blob = Buffer.from(line.slice(prefix.length), 'base64');
            const pub = Buffer.from(keyB64, 'base64');
            const id = crypto.createHash('sha256').update(Buffer.concat([Buffer.from(name + '\n', 'utf8'), Buffer.from([1]), pub])).digest().subarray(0, 4);
            if (!id.equals(blob.subarray(0, 4))) { console.log('key id mismatch'); process.exit(3); }
            const key = crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: pub.toString('base64url') }, format: 'jwk' });
            const ok = crypto.verify(null, text, key, blob.subarray(4));
            const forged = crypto.verify(null, Buffer.concat([text, Buffer.from('x')]), key, blob.subarray(4));
            console.log(ok && !forged ? 'verified ' + id.toString('hex') : 'signature does not verify');
            process.exit(ok && !forged ? 0 : 1);
            """;
        var start = new ProcessStartInfo("node", ["-e", script]) { RedirectStandardOutput = true, RedirectStandardError = true };
        start.Environment["NOTE"] = note;
        start.Environment["NAME"] = noteKey.Str("name");
        start.Environment["KEY"] = noteKey.Str("publicKey");
        using var node = Process.Start(start)!;
        var output = await node.StandardOutput.ReadToEndAsync() + await node.StandardError.ReadToEndAsync();
        await node.WaitForExitAsync();

        Assert.True(node.ExitCode == 0, output);
        Assert.Equal($"verified {noteKey.Str("keyId")}", output.Trim());
        Assert.StartsWith($"{noteKey.Str("name")}+{noteKey.Str("keyId")}+", noteKey.Str("verifierKey"));
    }

    [Fact]
    public async Task TheStoredTreeIsAppendOnlyAndAChangedNodeIsCaught()
    {
        var tenant = AuditTestClient.NewTenant("proof-tamper");
        await AuditSeed.RunAsync(service, tenant, "ann");
        await CheckpointAsync(tenant);
        var before = await service.Auditor(tenant).OkJsonAsync("/v1/audit/checkpoints/verify");

        await using (var app = new NpgsqlConnection(service.Database.AppConnection))
        {
            await app.OpenAsync();
            await using var update = new NpgsqlCommand("UPDATE sandbox.audit_tree_nodes SET hash = hash WHERE tenant = $1", app);
            update.Parameters.AddWithValue(tenant);
            var refused = await Assert.ThrowsAsync<PostgresException>(() => update.ExecuteNonQueryAsync());
            Assert.Equal("42501", refused.SqlState);
        }
        await service.Database.ExecuteAsync("""
            ALTER TABLE sandbox.audit_tree_nodes DISABLE TRIGGER USER;
            UPDATE sandbox.audit_tree_nodes SET hash = sha256(hash) WHERE tenant = $1 AND level = 1 AND idx = 0;
            ALTER TABLE sandbox.audit_tree_nodes ENABLE TRIGGER USER
            """.Replace("$1", $"'{tenant}'"));
        var after = await service.Auditor(tenant).OkJsonAsync("/v1/audit/checkpoints/verify");

        Assert.True(before["verified"]!.GetValue<bool>(), before.ToJsonString());
        Assert.False(after["verified"]!.GetValue<bool>());
        Assert.Contains("stored tree", after.Str("firstMismatch.reason"));
    }
}
