using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Sandbox.Audited.Tests.Audit;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Evidence;

/// <summary>
/// Files written into the node's outcome journal by someone else than the node: the worker commits whatever the envelope says
/// (run id, tenant, events, contents), so a forged file rewrites a finished run's answer or creates a run out of nothing.
/// </summary>
[Collection(ErasureAttackCollection.Name)]
public sealed class JournalForgeryTests(ErasureAttackFixture service)
{
    private static JsonObject Output(string text) => new()
    {
        ["sha256"] = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text))), ["bytes"] = Encoding.UTF8.GetByteCount(text),
        ["producedBytes"] = Encoding.UTF8.GetByteCount(text), ["truncated"] = false, ["encoding"] = "stored", ["content"] = "", ["stored"] = true,
    };

    internal static JsonObject Forged(Guid runId, string tenant, string text) => new()
    {
        ["runId"] = runId, ["user"] = "mallory", ["correlationId"] = null, ["causationId"] = null, ["tenant"] = tenant,
        ["events"] = new JsonArray(
            new JsonObject { ["type"] = "output_recorded", ["data"] = new JsonObject { ["runId"] = runId, ["stdout"] = Output(text), ["stderr"] = Output(""), ["at"] = DateTimeOffset.UtcNow } },
            new JsonObject { ["type"] = "run_completed", ["data"] = new JsonObject { ["runId"] = runId, ["status"] = "succeeded", ["exitCode"] = 0, ["durationMs"] = 1, ["reason"] = null, ["at"] = DateTimeOffset.UtcNow } }),
        ["contents"] = new JsonArray(Convert.ToBase64String(Encoding.UTF8.GetBytes(text)), ""),
    };

    [Fact]
    public async Task AForgedJournalFileNeitherRewritesAFinishedRunNorCreatesARun()
    {
        var tenant = AuditTestClient.NewTenant("jf-victim");
        var (_, run) = await service.Runner("bob", tenant).RunAsync(new { language = "python", code = "print('genuine')" });
        var victim = Guid.Parse(run.Str("runId"));
        var ghost = Guid.CreateVersion7();
        var folder = Path.Combine(service.JournalDirectory, service.NodeId);
        Directory.CreateDirectory(folder);
        await File.WriteAllTextAsync(Path.Combine(folder, $"{victim:D}.json"), Forged(victim, "another-tenant", "forged\n").ToJsonString());
        await File.WriteAllTextAsync(Path.Combine(folder, $"{ghost:D}.json"), Forged(ghost, tenant, "ghost\n").ToJsonString());
        await Eventually.WaitUntilAsync(() => Task.FromResult(Directory.GetFiles(folder, "*.json").Length == 0),
            () => "the journal worker never took the files", TimeSpan.FromSeconds(30));

        var (found, read) = await service.Runner("bob", tenant).GetJsonAsync($"/v1/runs/{victim}");
        Assert.Equal(HttpStatusCode.OK, found.StatusCode);
        Assert.Equal("genuine\n", read.Str("stdout.content"));
        Assert.Equal(0L, await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events WHERE stream_id = $1 AND tenant_id <> '' AND headers ->> 'tenant' <> $2", victim, tenant));
        Assert.Equal(0L, await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events WHERE stream_id = $1", ghost));
    }
}
