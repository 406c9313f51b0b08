using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Configuration;
using Npgsql;
using Sandbox.Audited.Api.Hosting;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Tests.Audit;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Evidence;

/// <summary>Inputs and outputs in the content-addressed evidence store, through the public API and the erase command.</summary>
[Collection(ServiceCollection.Name)]
public sealed class EvidenceStoreTests(ServiceFixture service)
{
    private static string Sha(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));

    private async Task<long> BlobRowsAsync(string tenant, string sha) =>
        await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.evidence_blobs WHERE tenant = $1 AND sha256 = $2", tenant, sha);

    private async Task<(Guid Id, JsonNode Run)> RunAsync(string tenant, object request, string subject = "alice")
    {
        var (response, run) = await service.Runner(subject, tenant).RunAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return (Guid.Parse(run.Str("runId")), run);
    }

    [Fact]
    public async Task AnswersCarryWholeStoredOutputsReadFromTheStoreInSegments()
    {
        var tenant = AuditTestClient.NewTenant("ev-big");
        // 240 KB of two-byte characters after one ASCII byte, so the answer's 48 KiB segments split characters; stderr is binary.
        // Kept small: ArtifactTests measures this process's heap while other collections run.
        const string code = "import sys\nsys.stdout.write('x' + '\\u00e9' * 120000)\nsys.stderr.buffer.write(bytes(range(256)) * 1000)";
        var (id, run) = await RunAsync(tenant, new { language = "python", code, limits = new { outputBytes = 1048576 } });

        var text = "x" + new string('\u00e9', 120000);
        var binary = Enumerable.Repeat(Enumerable.Range(0, 256).Select(b => (byte)b), 1000).SelectMany(b => b).ToArray();
        var (_, read) = await service.Runner("alice", tenant).GetJsonAsync($"/v1/runs/{id}");
        foreach (var answer in new[] { run, read })
        {
            Assert.Equal("utf8", answer.Str("stdout.encoding"));
            Assert.Equal(text, answer.Str("stdout.content"));
            Assert.Equal(Sha(text), answer.Str("stdout.sha256"));
            Assert.Equal("base64", answer.Str("stderr.encoding"));
            Assert.Equal(binary, Convert.FromBase64String(answer.Str("stderr.content")));
            Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(binary)), answer.Str("stderr.sha256"));
            Assert.Equal(binary.Length.ToString(), answer.Str("stderr.bytes"));
        }
    }

    [Fact]
    public async Task InputsAreStoredOncePerTenantAndEventsHoldOnlyDigests()
    {
        var (tenantA, tenantB) = (AuditTestClient.NewTenant("ev-a"), AuditTestClient.NewTenant("ev-b"));
        var code = "import sys\nprint(sys.stdin.read().upper() * 300)";
        var request = new { language = "python", code, stdin = "stored input ", files = new[] { new { name = "data.csv", content = "a,b\n1,2\n" } } };

        var (first, run) = await RunAsync(tenantA, request);
        await RunAsync(tenantA, request);
        await RunAsync(tenantB, request);

        Assert.Equal(1, await BlobRowsAsync(tenantA, Sha(code)));
        Assert.Equal(1, await BlobRowsAsync(tenantB, Sha(code)));
        Assert.Equal(1, await BlobRowsAsync(tenantA, Sha("stored input ")));
        Assert.Equal(1, await BlobRowsAsync(tenantA, Sha("a,b\n1,2\n")));
        Assert.Equal(2, await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.evidence_blobs WHERE sha256 = $1", Sha(code)));

        // The events hold digests and sizes, neither the code nor the output; the API answers with all of it.
        var requested = await service.Database.ScalarAsync<string>("SELECT data::text FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'run_requested'", first);
        var recorded = JsonNode.Parse(requested!)!;
        Assert.Null(recorded["code"]);
        Assert.True(recorded["inputsStored"]!.GetValue<bool>());
        Assert.Equal(Sha(code), recorded.Str("codeSha256"));
        var expected = string.Concat(Enumerable.Repeat("STORED INPUT ", 300)) + "\n";
        var output = JsonNode.Parse((await service.Database.ScalarAsync<string>(
            "SELECT data::text FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'output_recorded'", first))!)!;
        Assert.True(output["stdout"]!["stored"]!.GetValue<bool>());
        Assert.Equal("stored", output.Str("stdout.encoding"));
        Assert.Equal("", output.Str("stdout.content"));
        Assert.Equal(expected.Length, output["stdout"]!["bytes"]!.GetValue<long>());
        Assert.Equal(Sha(expected), output.Str("stdout.sha256"));
        Assert.Equal(expected, run.Str("stdout.content"));
        var (_, read) = await service.Runner("alice", tenantA).GetJsonAsync($"/v1/runs/{first}");
        Assert.Equal(expected, read.Str("stdout.content"));
    }

    [Fact]
    public async Task AnExecutorReadsARunsWholeInputsInOneGoAndRefusesOnesThatDoNotHashToTheirDigest()
    {
        var tenant = AuditTestClient.NewTenant("ev-whole");
        var store = Microsoft.Extensions.DependencyInjection.ServiceProviderServiceExtensions.GetRequiredService<EvidenceStore>(service.Services);
        var small = Encoding.UTF8.GetBytes("print('hello')");
        var large = RandomNumberGenerator.GetBytes(EvidenceStore.ChunkSize + 4096); // two chunks
        var hold = new ContentHold(Guid.NewGuid(), "test-node");
        var smallSha = (await store.PutAsync(tenant, small, hold, CancellationToken.None)).Sha256;
        var largeSha = (await store.PutAsync(tenant, new StoredContent(Convert.ToHexStringLower(SHA256.HashData(large)), large.Length), new MemoryStream(large), hold, CancellationToken.None)).Sha256;
        var absent = Sha("never stored");

        var whole = await store.ReadWholeAsync(tenant, [smallSha, largeSha, EvidenceStore.EmptySha256, absent, smallSha], CancellationToken.None);

        Assert.Equal(small, whole[smallSha]);
        Assert.Equal(large, whole[largeSha]);
        Assert.Equal(0, whole[EvidenceStore.EmptySha256]?.Length);
        Assert.Null(whole[absent]);
        Assert.Null((await store.ReadWholeAsync(AuditTestClient.NewTenant("ev-whole-other"), [smallSha], CancellationToken.None))[smallSha]);

        await using (var admin = new NpgsqlConnection(service.Database.AdminConnection))
        {
            await admin.OpenAsync();
            await using var tamper = new NpgsqlCommand($"""
                ALTER TABLE sandbox.evidence_chunks DISABLE TRIGGER USER;
                UPDATE sandbox.evidence_chunks SET data = convert_to('print(666)', 'UTF8') WHERE tenant = '{tenant}' AND sha256 = '{smallSha}';
                ALTER TABLE sandbox.evidence_chunks ENABLE TRIGGER USER;
                """, admin);
            await tamper.ExecuteNonQueryAsync();
        }
        var altered = await Assert.ThrowsAsync<InvalidDataException>(() => store.ReadWholeAsync(tenant, [smallSha], CancellationToken.None));
        Assert.Contains(smallSha, altered.Message);
    }

    [Fact]
    public async Task TheServiceRoleCannotChangeOrRemoveStoredContent()
    {
        var tenant = AuditTestClient.NewTenant("ev-role");
        await RunAsync(tenant, new { language = "shell", code = "echo protected" });
        await using var app = new NpgsqlConnection(service.Database.AppConnection);
        await app.OpenAsync();
        foreach (var sql in new[]
        {
            "UPDATE sandbox.evidence_chunks SET data = '\\x00'::bytea WHERE tenant = $1",
            "DELETE FROM sandbox.evidence_chunks WHERE tenant = $1",
            "UPDATE sandbox.evidence_blobs SET erased_at = now() WHERE tenant = $1",
            "DELETE FROM sandbox.evidence_blobs WHERE tenant = $1",
        })
        {
            await using var command = new NpgsqlCommand(sql, app);
            command.Parameters.AddWithValue(tenant);
            var refused = await Assert.ThrowsAsync<PostgresException>(() => command.ExecuteNonQueryAsync());
            Assert.Equal(PostgresErrorCodes.InsufficientPrivilege, refused.SqlState);
        }
        Assert.True(await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.evidence_chunks WHERE tenant = $1", tenant) >= 2);
    }

    [Fact]
    public async Task AStoredChunkEditedByASuperuserIsDetected()
    {
        var tenant = AuditTestClient.NewTenant("ev-tamper");
        var (id, run) = await RunAsync(tenant, new { language = "shell", code = "echo 'pay 100'" });
        var clean = await service.Auditor(tenant).OkJsonAsync($"/v1/audit/evidence/verify?runId={id}");
        Assert.True(clean["verified"]!.GetValue<bool>());
        Assert.Equal(4, clean["intact"]!.GetValue<int>()); // code, stdin, stdout, stderr
        Assert.Equal(4, clean["checked"]!.GetValue<int>());

        await using (var admin = new NpgsqlConnection(service.Database.AdminConnection))
        {
            await admin.OpenAsync();
            await using var tamper = new NpgsqlCommand("""
                ALTER TABLE sandbox.evidence_chunks DISABLE TRIGGER USER;
                UPDATE sandbox.evidence_chunks SET data = convert_to('pay 900' || chr(10), 'UTF8') WHERE tenant = $1 AND sha256 = $2;
                ALTER TABLE sandbox.evidence_chunks ENABLE TRIGGER USER;
                """.Replace("$1", $"'{tenant}'").Replace("$2", $"'{run.Str("stdout.sha256")}'"), admin);
            await tamper.ExecuteNonQueryAsync();
        }

        var report = await service.Auditor(tenant).OkJsonAsync($"/v1/audit/evidence/verify?runId={id}");
        Assert.False(report["verified"]!.GetValue<bool>());
        Assert.Equal(1, report["changed"]!.GetValue<int>());
        Assert.Equal("stdout", report["problems"]![0]!.Str("role"));
        Assert.Equal("changed", report["problems"]![0]!.Str("state"));
    }

    [Fact]
    public async Task ErasedContentVerifiesAsErasedAndTheChainStillVerifies()
    {
        var tenant = AuditTestClient.NewTenant("ev-erase");
        var (id, run) = await RunAsync(tenant, new { language = "shell", code = "echo 'personal data of bo''b'" });
        var stdout = run.Str("stdout.sha256");

        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            // The eraser role without a password of its own here: the superuser takes it for the session.
            ["ConnectionStrings:Eraser"] = new NpgsqlConnectionStringBuilder(service.Database.AdminConnection) { Options = "-c role=sandbox_eraser" }.ConnectionString,
        }).Build();
        Assert.Equal(0, await Commands.RunAsync(["erase", "--tenant", tenant, "--digest", stdout, "--reason", "data-subject request 42", "--by", "dpo"], configuration));

        Assert.Equal(0, await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.evidence_chunks WHERE tenant = $1 AND sha256 = $2", tenant, stdout));
        var evidence = await service.Auditor(tenant).OkJsonAsync($"/v1/audit/evidence/verify?runId={id}");
        Assert.True(evidence["verified"]!.GetValue<bool>());
        Assert.Equal(1, evidence["erased"]!.GetValue<int>());
        Assert.Equal("stdout", evidence["erasedItems"]![0]!.Str("role"));

        var chain = await service.Auditor(tenant).OkJsonAsync("/v1/audit/verify");
        Assert.True(chain["verified"]!.GetValue<bool>());
        var erasures = await service.Auditor(tenant).OkJsonAsync("/v1/audit/events?type=evidence_erased");
        var erased = erasures["items"]![0]!;
        Assert.Equal("dpo", erased.Str("data.caller.subject"));
        Assert.Equal("data-subject request 42", erased.Str("data.reason"));
        Assert.Equal(stdout, erased["data"]!["sha256s"]![0]!.ToString());

        var (_, read) = await service.Runner("alice", tenant).GetJsonAsync($"/v1/runs/{id}");
        Assert.Equal("erased", read.Str("stdout.encoding"));
        Assert.Equal(stdout, read.Str("stdout.sha256"));

        // Nothing of the erased output is left anywhere in the record: not in its events, the tenant's export or the bundle.
        foreach (var (client, path) in new[]
        {
            (service.Runner("alice", tenant), $"/v1/runs/{id}/events"),
            (service.Auditor(tenant), "/v1/audit/export"),
            (service.Runner("alice", tenant), $"/v1/runs/{id}/evidence"),
        })
        {
            using var response = await client.GetAsync(path);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var bytes = await response.Content.ReadAsByteArrayAsync();
            Assert.Contains(stdout, Encoding.UTF8.GetString(bytes), StringComparison.Ordinal);
            Assert.DoesNotContain("personal data of bob", Encoding.UTF8.GetString(bytes), StringComparison.Ordinal);
            Assert.DoesNotContain(Convert.ToBase64String(Encoding.UTF8.GetBytes("personal data of bob")), Encoding.UTF8.GetString(bytes), StringComparison.Ordinal);
        }

        // The same output again: the run's own answer carries what it printed, but erased content is never stored again.
        var (again, rerun) = await RunAsync(tenant, new { language = "shell", code = "echo 'personal data of bo''b'" });
        Assert.Equal("personal data of bob\n", rerun.Str("stdout.content"));
        Assert.Equal(0, await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.evidence_chunks WHERE tenant = $1 AND sha256 = $2", tenant, stdout));
        var (_, reread) = await service.Runner("alice", tenant).GetJsonAsync($"/v1/runs/{again}");
        Assert.Equal("erased", reread.Str("stdout.encoding"));
        Assert.Equal("", reread.Str("stdout.content"));
    }

    [Fact]
    public async Task RunsStoringTheSameOutputsSwappedDoNotDeadlock()
    {
        // One run printing A on stdout and B on stderr, another the reverse, at once: each round's contents are new, so both
        // transactions insert both rows; taken in opposite orders they would deadlock (PostgreSQL error 40P01).
        var tenant = AuditTestClient.NewTenant("ev-swap");
        var store = Microsoft.Extensions.DependencyInjection.ServiceProviderServiceExtensions.GetRequiredService<Marten.IDocumentStore>(service.Services);
        async Task CommitAsync(ReadOnlyMemory<byte>[] outputs)
        {
            await using var session = store.LightweightSession();
            EvidenceStore.Stage(session, tenant, outputs);
            session.QueueSqlCommand("SELECT pg_sleep(0.01)"); // the rows stay locked a moment, as while the outcome events append
            await session.SaveChangesAsync();
        }
        for (var round = 0; round < 20; round++)
        {
            ReadOnlyMemory<byte> a = Encoding.UTF8.GetBytes($"A{round}" + new string('a', 60_000));
            ReadOnlyMemory<byte> b = Encoding.UTF8.GetBytes($"B{round}" + new string('b', 60_000));
            await Task.WhenAll(Enumerable.Range(0, 4).Select(i => Task.Run(() => CommitAsync(i % 2 == 0 ? [a, b] : [b, a]))));
        }
        Assert.Equal(40, await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.evidence_chunks WHERE tenant = $1", tenant));
    }

    [Fact]
    public async Task ContentStagedWithACommitThatFailsIsNotStored()
    {
        var tenant = AuditTestClient.NewTenant("ev-stage");
        var store = Microsoft.Extensions.DependencyInjection.ServiceProviderServiceExtensions.GetRequiredService<Marten.IDocumentStore>(service.Services);
        var content = Encoding.UTF8.GetBytes("staged with a commit that fails");
        await using (var session = store.LightweightSession())
        {
            EvidenceStore.Stage(session, tenant, [content]);
            session.QueueSqlCommand("SELECT 1/0");
            await Assert.ThrowsAnyAsync<Exception>(() => session.SaveChangesAsync());
        }
        Assert.Equal(0, await BlobRowsAsync(tenant, Sha("staged with a commit that fails")));

        await using (var session = store.LightweightSession())
        {
            EvidenceStore.Stage(session, tenant, [content, content]); // the same content twice in one commit is stored once
            await session.SaveChangesAsync();
        }
        var evidence = Microsoft.Extensions.DependencyInjection.ServiceProviderServiceExtensions.GetRequiredService<EvidenceStore>(service.Services);
        Assert.Equal(content, await evidence.ReadPrefixAsync(tenant, Sha("staged with a commit that fails"), 1024, CancellationToken.None));
        await using (var session = store.LightweightSession())
        {
            EvidenceStore.Stage(session, tenant, [ReadOnlyMemory<byte>.Empty, content]); // empty content: a blob row with no chunk
            await session.SaveChangesAsync();
        }
        Assert.Equal(0L, await evidence.SizeAsync(tenant, Sha(""), CancellationToken.None));
        Assert.Empty((await evidence.ReadPrefixAsync(tenant, Sha(""), 16, CancellationToken.None))!);
        Assert.Equal(1, await BlobRowsAsync(tenant, Sha("staged with a commit that fails")));
    }

    [Fact]
    public async Task ADeterministicRunReproducesIdenticallyOnItsRecordedImage()
    {
        var tenant = AuditTestClient.NewTenant("ev-repro");
        var (id, run) = await RunAsync(tenant, new { language = "python", code = "import sys\nprint(sys.stdin.read()[::-1])", stdin = "abc" });
        var runner = service.Runner("alice", tenant);

        var response = await runner.PostAsync($"/v1/runs/{id}/reproduce", null);
        var body = await ApiCalls.BodyAsync(response);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.True(body["comparison"]!["identical"]!.GetValue<bool>());
        Assert.Empty(body["comparison"]!["differs"]!.AsArray());
        Assert.Equal(run.Str("stdout.sha256"), body["comparison"]!["outputs"]![0]!.Str("reproducedSha256"));
        Assert.Equal("cba\n", body.Str("run.stdout.content"));
        Assert.Equal(run.Str("sandbox.imageId"), body.Str("imageId"));
        Assert.Equal(run.Str("sandbox.imageId"), body.Str("run.sandbox.imageId"));
        Assert.Equal("allow", body.Str("originalDecision.decision"));
        var linked = await service.Database.ScalarAsync<string>(
            "SELECT data ->> 'reproducesRunId' FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'run_requested'", Guid.Parse(body.Str("runId")));
        Assert.Equal(id.ToString(), linked);
    }

    [Fact]
    public async Task AProgramPrintingTheTimeReproducesWithStdoutNamedAsDifferent()
    {
        var tenant = AuditTestClient.NewTenant("ev-repro-time");
        var (id, _) = await RunAsync(tenant, new { language = "python", code = "import time\nprint(time.time_ns())" });

        var response = await service.Runner("alice", tenant).PostAsync($"/v1/runs/{id}/reproduce", null);
        var body = await ApiCalls.BodyAsync(response);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.False(body["comparison"]!["identical"]!.GetValue<bool>());
        Assert.Equal(["stdout"], body["comparison"]!["differs"]!.AsArray().Select(n => n!.ToString()));
        var stdout = body["comparison"]!["outputs"]![0]!;
        Assert.NotEqual(stdout.Str("originalSha256"), stdout.Str("reproducedSha256"));
    }

    [Fact]
    public async Task AReproductionComparesArtifactsAndNamesTheOneThatDiffers()
    {
        var tenant = AuditTestClient.NewTenant("ev-repro-artifact");
        var code = "import os, time\nos.makedirs('out', exist_ok=True)\nopen('out/fixed.txt', 'w').write('same')\nopen('out/stamp.txt', 'w').write(str(time.time_ns()))";
        var (id, _) = await RunAsync(tenant, new { language = "python", code });

        var response = await service.Runner("alice", tenant).PostAsync($"/v1/runs/{id}/reproduce", null);
        var body = await ApiCalls.BodyAsync(response);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(["artifact:stamp.txt"], body["comparison"]!["differs"]!.AsArray().Select(n => n!.ToString()));
        var fixedArtifact = body["comparison"]!["outputs"]!.AsArray().Single(o => o!.Str("output") == "artifact:fixed.txt")!;
        Assert.True(fixedArtifact["identical"]!.GetValue<bool>());
        Assert.Equal(Sha("same"), fixedArtifact.Str("reproducedSha256"));
    }

    [Fact]
    public async Task AnAuditorCannotReproduceARun()
    {
        var tenant = AuditTestClient.NewTenant("ev-repro-auditor");
        var (id, _) = await RunAsync(tenant, new { language = "shell", code = "echo hi" });

        var response = await service.Auditor(tenant).PostAsync($"/v1/runs/{id}/reproduce", null);

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
    }

    [Fact]
    public async Task TheEvidenceBundleVerifiesOfflineAndFailsWhenAFileInsideIsAltered()
    {
        var tenant = AuditTestClient.NewTenant("ev-bundle");
        var (id, run) = await RunAsync(tenant, new
        {
            language = "python", code = "print(open('in.txt').read().strip() + ' done')",
            files = new[] { new { name = "in.txt", content = "ledger" } },
        });
        Assert.Equal("ledger done\n", run.Str("stdout.content"));

        var response = await service.Auditor(tenant).GetAsync($"/v1/runs/{id}/evidence");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("application/x-tar", response.Content.Headers.ContentType?.MediaType);
        var bundle = Path.Combine(Path.GetTempPath(), $"evidence-{id:N}.tar");
        var altered = Path.Combine(Path.GetTempPath(), $"evidence-{id:N}-altered.tar");
        var key = Path.Combine(Path.GetTempPath(), $"evidence-{id:N}-key.json");
        try
        {
            await File.WriteAllBytesAsync(bundle, await response.Content.ReadAsByteArrayAsync());
            await File.WriteAllTextAsync(key, (await service.Auditor(tenant).OkJsonAsync("/v1/audit/checkpoints/key")).ToJsonString());
            var (exit, output) = Verify(bundle, key);
            Assert.True(exit == Sandbox.Audited.Verifier.VerifyCommand.Verified, output);
            Assert.Contains("5 contents match", output); // code, stdin, in.txt, stdout, stderr

            var stdout = "content/" + run.Str("stdout.sha256");
            await using (var source = new System.Formats.Tar.TarReader(File.OpenRead(bundle)))
            await using (var target = new System.Formats.Tar.TarWriter(File.Create(altered)))
                while (await source.GetNextEntryAsync(copyData: true) is { } entry)
                {
                    if (entry.Name == stdout)
                        entry.DataStream = new MemoryStream(Encoding.UTF8.GetBytes("forged done\n"));
                    await target.WriteEntryAsync(entry);
                }
            var (alteredExit, alteredOutput) = Verify(altered, key);
            Assert.True(alteredExit == Sandbox.Audited.Verifier.VerifyCommand.NotVerified, alteredOutput);
            Assert.Contains($"{stdout} is missing or does not hash", alteredOutput);
            Assert.Contains("stdout: content/", alteredOutput);
        }
        finally
        {
            File.Delete(bundle);
            File.Delete(altered);
            File.Delete(key);
        }
    }

    private static (int Exit, string Output) Verify(string bundle, string key)
    {
        using var output = new StringWriter();
        var exit = Sandbox.Audited.Verifier.VerifyCommand.Run(["--bundle", bundle, "--key", key], output);
        return (exit, output.ToString());
    }
}
