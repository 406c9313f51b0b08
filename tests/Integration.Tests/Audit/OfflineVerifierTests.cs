using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using Sandbox.Audited.Tests.Infrastructure;
using Sandbox.Audited.Verifier;

namespace Sandbox.Audited.Tests.Audit;

/// <summary>
/// The auditor's path end to end: a real run through the API, a run recorded through the service's write path whose data
/// holds the number 1e-300 (the API now refuses such a limit, but the canonical form must hold for any number an event
/// carries), an export, a signed checkpoint and the public key fetched over HTTP, then sbx-verify on the files alone —
/// and on tampered copies of them.
/// </summary>
[Collection(ServiceCollection.Name)]
public sealed class OfflineVerifierTests(ServiceFixture service) : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("sbx-verify-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private sealed record Files(string Export, string Checkpoint, string Key, string[] Lines);

    private async Task<Files> ExportAsync()
    {
        var tenant = AuditTestClient.NewTenant("offline");
        var (response, run) = await service.Runner("carl", tenant).RunAsync(new { language = "shell", code = "echo hi", limits = new { cpus = 0.25 } });
        Assert.True(response.IsSuccessStatusCode, run.ToJsonString());
        await AuditSeed.RunAsync(service, tenant, "ann", requested: new Sandbox.Audited.Domain.Runs.RequestedLimits(Cpus: 1e-300));
        await AuditSeed.RunAsync(service, tenant, "bob");

        var auditor = service.Auditor(tenant);
        var checkpoint = await auditor.PostAsync("/v1/audit/checkpoints", null);
        Assert.Equal(HttpStatusCode.Created, checkpoint.StatusCode);
        var files = new Files(Path.Combine(_directory, "export.ndjson"), Path.Combine(_directory, "checkpoint.json"), Path.Combine(_directory, "key.json"), []);
        await File.WriteAllTextAsync(files.Checkpoint, await checkpoint.Content.ReadAsStringAsync());
        await File.WriteAllTextAsync(files.Key, await auditor.GetStringAsync("/v1/audit/checkpoints/key"));
        var export = await auditor.GetStringAsync("/v1/audit/export");
        await File.WriteAllTextAsync(files.Export, export);
        return files with { Lines = export.Split('\n', StringSplitOptions.RemoveEmptyEntries) };
    }

    private static (int Exit, string Output) Verify(params string[] args)
    {
        var output = new StringWriter();
        var exit = VerifyCommand.Run(args, output);
        return (exit, output.ToString());
    }

    private (int Exit, string Output) VerifyTampered(Files files, IEnumerable<string> lines)
    {
        var tampered = Path.Combine(_directory, "tampered.ndjson");
        File.WriteAllLines(tampered, lines);
        return Verify(tampered, "--checkpoint", files.Checkpoint, "--key", files.Key);
    }

    [Fact]
    public async Task AnExportFromTheServiceVerifiesOfflineWithItsSignedCheckpoint()
    {
        var files = await ExportAsync();

        var (exit, output) = Verify(files.Export, "--checkpoint", files.Checkpoint, "--key", files.Key);

        Assert.True(exit == VerifyCommand.Verified, output);
        Assert.Contains("VERIFIED: all", output);
        Assert.Contains("PASS  checkpoint", output);
        Assert.Contains("signature verifies", output);
        Assert.Contains("in RFC 8785", output);
    }

    [Fact]
    public async Task AnIndependentRfc8785ImplementationRecomputesEveryHashOfTheExport()
    {
        var files = await ExportAsync();
        var requested = files.Lines.Select(l => JsonNode.Parse(l)!).First(e => e.Str("type") == "run_requested" && e.Str("subject") == "ann");
        Assert.Equal(1e-300, requested["data"]!["limits"]!["cpus"]!.GetValue<double>());

        var directory = Path.Combine(TestEnvironment.RepoRoot, "tests", "jcs");
        Assert.True(Directory.Exists(Path.Combine(directory, "node_modules", "canonicalize")), "tests/jcs/node_modules is missing: `npm ci` in tests/jcs (./sbx test does).");
        var start = new ProcessStartInfo("node", ["chain-hash.mjs"]) { WorkingDirectory = directory, RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        using var node = Process.Start(start)!;
        var output = node.StandardOutput.ReadToEndAsync();
        var errors = node.StandardError.ReadToEndAsync();
        await node.StandardInput.WriteAsync(await File.ReadAllTextAsync(files.Export));
        node.StandardInput.Close();
        await node.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(1));
        Assert.True(node.ExitCode == 0, await errors);

        var results = (await output).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(' ')).ToList();
        Assert.Equal(files.Lines.Length, results.Count);
        Assert.All(results, r => Assert.True(r[1] == r[2], $"sequence {r[0]}: node computes {r[1]}, the service recorded {r[2]}"));
    }

    [Fact]
    public async Task EachTamperingOfTheExportIsCaught()
    {
        var files = await ExportAsync();
        var lines = files.Lines.ToList();
        var middle = lines.Count / 2;

        var deleted = lines.Where((_, i) => i != middle);
        var altered = lines.Select((l, i) => i == middle ? l.Replace("\"version\":", "\"version\":1", StringComparison.Ordinal) : l);
        var alteredData = lines.Select((l, i) => i == middle ? AddToData(l) : l);
        var inserted = lines.Take(middle).Append(lines[1]).Concat(lines.Skip(middle));
        var swapped = lines.Select((l, i) => i == middle ? lines[middle + 1] : i == middle + 1 ? lines[middle] : l);

        foreach (var (name, copy) in new[] { ("deleted", deleted), ("altered version", altered), ("altered data", alteredData), ("inserted", inserted), ("swapped", swapped) })
        {
            var (exit, output) = VerifyTampered(files, copy);
            Assert.True(exit == VerifyCommand.NotVerified, $"{name}: exit {exit}\n{output}");
            Assert.Contains("NOT VERIFIED", output);
            Assert.Contains("FAIL", output);
        }
        Assert.Contains("is missing", VerifyTampered(files, deleted).Output);
        Assert.Contains("hash mismatch", VerifyTampered(files, alteredData).Output);
        Assert.Contains("does not follow", VerifyTampered(files, swapped).Output);
    }

    private static string AddToData(string line)
    {
        var e = JsonNode.Parse(line)!;
        e["data"]!["note"] = "added later";
        return e.ToJsonString();
    }

    [Fact]
    public async Task EventsRecordedInTheLegacyFormKeepVerifyingNextToNewOnes()
    {
        var tenant = AuditTestClient.NewTenant("legacy");
        await AuditSeed.BulkAsync(service, tenant, 3, legacy: true);
        await AuditSeed.RunAsync(service, tenant, "bob");
        var auditor = service.Auditor(tenant);

        var report = await auditor.OkJsonAsync("/v1/audit/verify");
        var export = Path.Combine(_directory, "mixed.ndjson");
        await File.WriteAllTextAsync(export, await auditor.GetStringAsync("/v1/audit/export"));
        var (exit, output) = Verify(export);

        Assert.True(report["verified"]!.GetValue<bool>(), report.ToJsonString());
        Assert.Equal(32, report["eventsChecked"]!.GetValue<long>());
        Assert.True(exit == VerifyCommand.Verified, output);
        Assert.Contains("in RFC 8785 (canon \"jcs\"), 24 in the legacy form)", output);
        // The forms differ for these events (1e-7 is 1E-07 in the legacy form): the header really picks the form.
        var legacy = JsonNode.Parse((await File.ReadAllLinesAsync(export)).First(l => l.Contains("run_requested", StringComparison.Ordinal)))!;
        Assert.Null(legacy["canon"]);
        Assert.NotEqual(legacy.Str("hash"), Sandbox.Audited.Domain.Hashing.EventChain.Hash(legacy.Str("prevHash"), Guid.Parse(legacy.Str("streamId")),
            legacy["version"]!.GetValue<long>(), legacy.Str("type"), legacy["data"]!.ToJsonString()));
    }

    [Fact]
    public async Task UnreadableInputIsNotAVerdict()
    {
        var files = await ExportAsync();
        var broken = Path.Combine(_directory, "broken.ndjson");
        await File.WriteAllTextAsync(broken, files.Lines[0] + "\n{\"sequence\":\n");

        Assert.Equal(VerifyCommand.UnusableInput, Verify(broken).Exit);
        Assert.Equal(VerifyCommand.UnusableInput, Verify(files.Export, "--key", files.Checkpoint).Exit);
        Assert.Equal(VerifyCommand.UnusableInput, Verify(Path.Combine(_directory, "missing.ndjson")).Exit);
        Assert.Equal(VerifyCommand.UnusableInput, Verify().Exit);
    }
}
