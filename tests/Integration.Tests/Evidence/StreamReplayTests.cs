using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Configuration;
using Npgsql;
using Sandbox.Audited.Api.Hosting;
using Sandbox.Audited.Tests.Api;
using Sandbox.Audited.Tests.Audit;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Evidence;

/// <summary>A finished run's stream replayed from the record: stored output in segments, an erased output named as erased.</summary>
[Collection(ServiceCollection.Name)]
public sealed class StreamReplayTests(ServiceFixture service)
{
    [Fact]
    public async Task AReplayOfAnErasedOutputSaysItWasErasedWithWhenAndWhy()
    {
        var tenant = AuditTestClient.NewTenant("replay-erased");
        var client = service.Runner("alice", tenant);
        var (response, run) = await client.RunAsync(new { language = "shell", code = "echo 'personal data of bo''b'; echo kept >&2" });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var stdout = run.Str("stdout.sha256");
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["ConnectionStrings:Eraser"] = new NpgsqlConnectionStringBuilder(service.Database.AdminConnection) { Options = "-c role=sandbox_eraser" }.ConnectionString,
        }).Build();
        var before = DateTimeOffset.UtcNow.AddSeconds(-5);
        Assert.Equal(0, await Commands.RunAsync(["erase", "--tenant", tenant, "--digest", stdout, "--reason", "data-subject request 7", "--by", "dpo"], configuration));

        var events = await AsyncRunTests.ReadStreamAsync(client, $"/v1/runs/{run.Str("runId")}/stream");

        var erased = Assert.Single(events, e => e.Name == "output_erased").Data;
        Assert.Equal("stdout", erased.Str("stream"));
        Assert.Equal(stdout, erased.Str("sha256"));
        Assert.Equal(run.Str("stdout.bytes"), erased.Str("bytes"));
        Assert.Equal("data-subject request 7", erased.Str("reason"));
        Assert.InRange(DateTimeOffset.Parse(erased.Str("erasedAt"), System.Globalization.CultureInfo.InvariantCulture), before, DateTimeOffset.UtcNow.AddSeconds(5));
        Assert.DoesNotContain(events, e => e.Name == "stdout");
        Assert.DoesNotContain(events, e => e.Data.ToJsonString().Contains("personal data", StringComparison.Ordinal));
        Assert.Equal("kept\n", Assert.Single(events, e => e.Name == "stderr").Data.Str("text"));
        Assert.Equal("end", events[^1].Name);
    }

    [Fact]
    public async Task AReplayOfALargeOutputComesInTextSegmentsThatMakeTheRecordedOutputAndResumesInPlace()
    {
        var tenant = AuditTestClient.NewTenant("replay-large");
        var client = service.Runner("alice", tenant);
        // 240 KB of two-byte characters after one ASCII byte: 48 KiB segments would split characters unless cut before them.
        const string code = "import sys\nsys.stdout.write('x' + '\\u00e9' * 120000)";
        var (response, run) = await client.RunAsync(new { language = "python", code, limits = new { outputBytes = 1048576 } });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var text = "x" + new string('\u00e9', 120000);

        var (ids, chunks) = await ReadOutputAsync(client, $"/v1/runs/{run.Str("runId")}/stream", null);
        Assert.True(chunks.Count >= 5, $"{chunks.Count} stdout messages");
        Assert.All(chunks, c => Assert.True(c["text"] is not null && c["bytes"]!.GetValue<int>() <= 48 * 1024, c.ToJsonString()[..60]));
        Assert.Equal(text, string.Concat(chunks.Select(c => c["text"]!.GetValue<string>())));

        // Resumed after the second segment: the rest, once.
        var (_, rest) = await ReadOutputAsync(client, $"/v1/runs/{run.Str("runId")}/stream", ids[1]);
        Assert.Equal(text, string.Concat(chunks.Take(2).Concat(rest).Select(c => c["text"]!.GetValue<string>())));
    }

    private static async Task<(List<string> Ids, List<JsonNode> Stdout)> ReadOutputAsync(HttpClient client, string path, string? lastEventId)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, path);
        if (lastEventId is not null)
            request.Headers.Add("Last-Event-ID", lastEventId);
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(), Encoding.UTF8);
        var (ids, stdout) = (new List<string>(), new List<JsonNode>());
        string? name = null, id = null, data = null;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (line.StartsWith("event: ", StringComparison.Ordinal))
                name = line["event: ".Length..];
            else if (line.StartsWith("id: ", StringComparison.Ordinal))
                id = line["id: ".Length..];
            else if (line.StartsWith("data: ", StringComparison.Ordinal))
                data = line["data: ".Length..];
            else if (line.Length == 0)
            {
                // A blank line ends a message, whatever the order of its fields.
                if (name == "stdout")
                {
                    ids.Add(id!);
                    stdout.Add(JsonNode.Parse(data!)!);
                }
                (name, id, data) = (null, null, null);
            }
        }
        return (ids, stdout);
    }
}
