using System.Net;
using System.Text.Json.Nodes;
using Sandbox.Audited.Tests.Infrastructure;
using Sandbox.Audited.Verifier;

namespace Sandbox.Audited.Tests.Audit;

/// <summary>
/// The service's own responses, saved as they come: two checkpoints (with their Ed25519 signed notes), the note keys, an
/// inclusion proof of a run and the consistency proof between the two checkpoints; sbx-verify checks them all offline.
/// </summary>
[Collection(ServiceCollection.Name)]
public sealed class OfflineProofFilesTests(ServiceFixture service) : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("sbx-proofs-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private async Task<string> SaveAsync(string name, string body)
    {
        var path = Path.Combine(_directory, name);
        await File.WriteAllTextAsync(path, body);
        return path;
    }

    private static (int Exit, string Output) Verify(params string[] args)
    {
        var output = new StringWriter();
        return (VerifyCommand.Run(args, output), output.ToString());
    }

    [Fact]
    public async Task ProofsAndSignedNotesAsTheServiceReturnsThemVerifyOffline()
    {
        var tenant = AuditTestClient.NewTenant("offline-proofs");
        var auditor = service.Auditor(tenant);
        await AuditSeed.RunAsync(service, tenant, "lea");
        var first = await auditor.PostAsync("/v1/audit/checkpoints", null);
        Assert.Equal(HttpStatusCode.Created, first.StatusCode);
        var firstHead = JsonNode.Parse(await first.Content.ReadAsStringAsync())!;
        var run = await AuditSeed.RunAsync(service, tenant, "lea");
        var second = await auditor.PostAsync("/v1/audit/checkpoints", null);
        Assert.Equal(HttpStatusCode.Created, second.StatusCode);
        var secondHead = JsonNode.Parse(await second.Content.ReadAsStringAsync())!;

        var checkpoints = await SaveAsync("checkpoints.json", await auditor.GetStringAsync("/v1/audit/checkpoints"));
        var key = await SaveAsync("key.json", await auditor.GetStringAsync("/v1/audit/checkpoints/key"));
        var inclusion = await SaveAsync("inclusion.json",
            await auditor.GetStringAsync($"/v1/audit/proofs/inclusion?runId={run}&treeSize={secondHead.Str("treeSize")}"));
        var consistency = await SaveAsync("consistency.json",
            await auditor.GetStringAsync($"/v1/audit/proofs/consistency?first={firstHead.Str("treeSize")}&second={secondHead.Str("treeSize")}"));
        var export = await SaveAsync("export.ndjson", await auditor.GetStringAsync("/v1/audit/export"));

        var (exit, output) = Verify(export, "--checkpoint", checkpoints, "--key", key, "--inclusion", inclusion, "--consistency", consistency);

        Assert.True(exit == VerifyCommand.Verified, output);
        Assert.Contains($"PASS  checkpoint {firstHead.Str("sequence")} note", output);
        Assert.Contains($"PASS  checkpoint {secondHead.Str("sequence")} note", output);
        Assert.Contains("Ed25519 signed note", output);
        Assert.Equal(8, output.Split('\n').Count(l => l.StartsWith("PASS  inclusion", StringComparison.Ordinal)));
        Assert.Contains("PASS  consistency", output);

        // The note of the second checkpoint altered: its size no longer what was signed.
        var list = JsonNode.Parse(await File.ReadAllTextAsync(checkpoints))!.AsArray();
        var last = list[^1]!;
        last["note"] = last.Str("note").Replace($"\n{secondHead.Str("treeSize")}\n", $"\n{secondHead.Str("treeSize")}0\n", StringComparison.Ordinal);
        var altered = await SaveAsync("altered.json", list.ToJsonString());
        var (alteredExit, alteredOutput) = Verify(export, "--checkpoint", altered, "--key", key);
        Assert.True(alteredExit == VerifyCommand.NotVerified, alteredOutput);
        Assert.Contains($"FAIL  checkpoint {secondHead.Str("sequence")} note", alteredOutput);

        // Another service's keys: the notes are signed by no key given.
        var other = JsonNode.Parse(await File.ReadAllTextAsync(key))!;
        other["noteKeys"] = new JsonArray(new JsonObject { ["verifierKey"] = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW" });
        var wrongKey = await SaveAsync("wrong-key.json", other.ToJsonString());
        var (wrongExit, wrongOutput) = Verify(export, "--checkpoint", checkpoints, "--key", wrongKey);
        Assert.True(wrongExit == VerifyCommand.NotVerified, wrongOutput);
        Assert.Contains("no signature by a known key", wrongOutput);
    }
}
