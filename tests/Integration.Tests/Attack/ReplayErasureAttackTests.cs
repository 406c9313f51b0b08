using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Configuration;
using Npgsql;
using Sandbox.Audited.Api.Hosting;
using Sandbox.Audited.Tests.Audit;
using Sandbox.Audited.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Sandbox.Audited.Tests.Attack;

/// <summary>A node whose policy lets a runner print up to the ceiling (4 MiB): outputs of several 1 MiB chunks in the store.</summary>
public sealed class LargeOutputFixture : ServiceFixture
{
    private readonly string _policies = CopyPolicies();

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?> { ["Policies:Directory"] = _policies };

    private static string CopyPolicies()
    {
        var root = Path.Combine(TestEnvironment.RepoRoot, "policies");
        var policies = Path.Combine(Path.GetTempPath(), "sbx-large-output-policies-" + Guid.NewGuid().ToString("N")[..8]);
        foreach (var file in Directory.GetFiles(root, "*.yaml", SearchOption.AllDirectories))
        {
            var target = Path.Combine(policies, Path.GetRelativePath(root, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.WriteAllText(target, File.ReadAllText(file).Replace("outputBytes: 1048576", "outputBytes: 4194304", StringComparison.Ordinal));
        }
        return policies;
    }
}

[CollectionDefinition(Name)]
public sealed class LargeOutputCollection : ICollectionFixture<LargeOutputFixture>
{
    public const string Name = "attack4-large-output";
}

/// <summary>
/// Attack on the stream's replay of a finished run: its output comes from the evidence store a 48 KiB segment at a time,
/// and an erased output is promised as an `output_erased` message "instead of arriving as nothing". Erased while a client
/// is being replayed it, the rest of the output read as empty chunks and the stream ended `end` as if it were whole.
/// </summary>
[Collection(LargeOutputCollection.Name)]
public sealed class ReplayErasureAttackTests(LargeOutputFixture service, ITestOutputHelper output)
{
    [Fact]
    public async Task AnOutputErasedWhileItIsReplayedEndsWithOutputErasedNotCutShortAsIfWhole()
    {
        var tenant = AuditTestClient.NewTenant("replay-erased-midway");
        var client = service.Runner("alice", tenant);
        client.Timeout = TimeSpan.FromMinutes(2);
        const int size = 3 * 1024 * 1024 + 1; // four chunks in the store
        var (response, run) = await client.RunAsync(new
        {
            language = "python", code = $"import sys\nsys.stdout.write('a' * {size})", limits = new { outputBytes = 4194304, timeoutMs = 30000 },
        });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(size, int.Parse(run.Str("stdout.bytes"), System.Globalization.CultureInfo.InvariantCulture));
        var runId = run.Str("runId");

        using var request = new HttpRequestMessage(HttpMethod.Get, $"/v1/runs/{runId}/stream");
        using var stream = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, stream.StatusCode);
        using var reader = new StreamReader(await stream.Content.ReadAsStreamAsync(), Encoding.UTF8);
        var messages = new List<(string Name, JsonNode Data)>();
        var erased = false;
        while (await NextAsync(reader) is { } message)
        {
            messages.Add(message);
            // The client has the first segment of the output: now the tenant's data protection officer erases it.
            if (message.Name == "stdout" && !erased)
            {
                await EraseAsync(tenant, run.Str("stdout.sha256"));
                erased = true;
            }
        }

        var delivered = messages.Where(m => m.Name == "stdout").Sum(m => m.Data["bytes"]!.GetValue<long>());
        var said = messages.Where(m => m.Name == "output_erased").ToList();
        output.WriteLine($"stdout delivered {delivered} of {size} bytes; output_erased messages {said.Count}; last {messages[^1].Name}");
        Assert.True(erased, "the replay sent no stdout");
        Assert.Equal("end", messages[^1].Name);
        // Either the whole output, or the part sent and then what happened to the rest: never a cut-off output and "end".
        Assert.True(delivered == size || said.Count == 1,
            $"the replay ended after {delivered} of the {size} bytes of stdout, with no output_erased message");
        if (said.Count == 1)
        {
            Assert.Equal("stdout", said[0].Data.Str("stream"));
            Assert.Equal(run.Str("stdout.sha256"), said[0].Data.Str("sha256"));
            Assert.Equal("data-subject request 9", said[0].Data.Str("reason"));
        }
    }

    [Fact]
    public async Task AnOutputErasedWhileTheRunIsAnsweredNeverGivesAWellFormedAnswerWithTheOutputCutShort()
    {
        var tenant = AuditTestClient.NewTenant("answer-erased-midway");
        var client = service.Runner("alice", tenant);
        client.Timeout = TimeSpan.FromMinutes(2);
        const int size = 3 * 1024 * 1024 + 1;
        var (response, run) = await client.RunAsync(new
        {
            language = "python", code = $"import sys\nsys.stdout.write('b' * {size})", limits = new { outputBytes = 4194304, timeoutMs = 30000 },
        });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var runId = run.Str("runId");

        string? body = null;
        Exception? broken = null;
        try
        {
            using var answer = await client.GetAsync($"/v1/runs/{runId}", HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
            using var reader = new StreamReader(await answer.Content.ReadAsStreamAsync(), Encoding.UTF8);
            var start = new char[4096];
            var read = await reader.ReadBlockAsync(start);
            // The client has the answer's first bytes; the output is erased while the rest is on its way.
            await EraseAsync(tenant, run.Str("stdout.sha256"));
            body = new string(start, 0, read) + await reader.ReadToEndAsync();
        }
        catch (Exception e) when (e is HttpRequestException or IOException)
        {
            broken = e; // an answer broken off: the client knows it is not whole
        }
        output.WriteLine(broken is null ? $"answer of {body!.Length} characters" : $"answer broken off: {broken.GetType().Name}: {broken.Message}");
        if (broken is not null)
            return;
        var json = JsonNode.Parse(body!)!;
        var encoding = json.Str("stdout.encoding");
        var content = json["stdout"]!["content"]?.GetValue<string>() ?? "";
        Assert.True(encoding == "erased" || content.Length == size,
            $"a well-formed answer gave stdout as '{encoding}' with {content.Length} of its {size} bytes");
    }

    [Theory]
    [InlineData("-1-0-0-0")]
    [InlineData("1--1-0-0")]
    [InlineData("99999999999999999999-0-0-0")]
    [InlineData("1-0-0-2")]
    [InlineData("one-two-three-four")]
    [InlineData("1-0-0")]
    [InlineData(" 1-0-0-0")]
    [InlineData("1-0-0-0-0")]
    [InlineData("end ")]
    public async Task ALastEventIdThisStreamNeverSentIs400(string lastEventId)
    {
        var tenant = AuditTestClient.NewTenant("replay-ids");
        var client = service.Runner("alice", tenant);
        var (response, run) = await client.RunAsync(new { language = "shell", code = "echo hello" });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);

        using var request = new HttpRequestMessage(HttpMethod.Get, $"/v1/runs/{run.Str("runId")}/stream");
        request.Headers.TryAddWithoutValidation("Last-Event-ID", lastEventId);
        using var answer = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.BadRequest, answer.StatusCode);
        Assert.Equal("application/problem+json", answer.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task AWellFormedLastEventIdPastTheRecordGivesOnlyTheEndAndAnotherTenantsRunIs404WhateverTheId()
    {
        var tenant = AuditTestClient.NewTenant("replay-far");
        var client = service.Runner("alice", tenant);
        var (response, run) = await client.RunAsync(new { language = "shell", code = "echo hello" });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var path = $"/v1/runs/{run.Str("runId")}/stream";

        // Offsets past the output: nothing of it is sent again, the stream still ends.
        var far = await StreamAsync(client, path, $"{long.MaxValue}-{long.MaxValue}-{long.MaxValue}-1");
        Assert.Equal(HttpStatusCode.OK, far.Status);
        Assert.Equal(["end"], far.Names);
        // Resumed inside the output: exactly the rest.
        var inside = await StreamAsync(client, path, "1-2-0-0");
        Assert.Equal("llo\n", string.Concat(inside.Messages.Where(m => m.Name == "stdout").Select(m => m.Data.Str("text"))));

        var mallory = service.Runner("mallory", AuditTestClient.NewTenant("replay-other"));
        foreach (var id in new[] { null, "end", "1-0-0-0", $"{long.MaxValue}-0-0-0" })
            Assert.Equal(HttpStatusCode.NotFound, (await StreamAsync(mallory, path, id)).Status);
        Assert.Equal(HttpStatusCode.NotFound, (await StreamAsync(client, $"/v1/runs/{Guid.CreateVersion7()}/stream", "end")).Status);
    }

    private static async Task<(HttpStatusCode Status, List<string> Names, List<(string Name, JsonNode Data)> Messages)> StreamAsync(
        HttpClient client, string path, string? lastEventId)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, path);
        if (lastEventId is not null)
            request.Headers.Add("Last-Event-ID", lastEventId);
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        var messages = new List<(string Name, JsonNode Data)>();
        if (response.StatusCode == HttpStatusCode.OK)
        {
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(), Encoding.UTF8);
            while (await NextAsync(reader) is { } message)
                messages.Add(message);
        }
        return (response.StatusCode, messages.Select(m => m.Name).ToList(), messages);
    }

    private async Task EraseAsync(string tenant, string sha256)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["ConnectionStrings:Eraser"] = new NpgsqlConnectionStringBuilder(service.Database.AdminConnection) { Options = "-c role=sandbox_eraser" }.ConnectionString,
        }).Build();
        Assert.Equal(0, await Commands.RunAsync(["erase", "--tenant", tenant, "--digest", sha256, "--reason", "data-subject request 9", "--by", "dpo"], configuration));
    }

    private static async Task<(string Name, JsonNode Data)?> NextAsync(StreamReader reader)
    {
        string? name = null, data = null;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (line.StartsWith("event: ", StringComparison.Ordinal))
                name = line["event: ".Length..];
            else if (line.StartsWith("data: ", StringComparison.Ordinal))
                data = line["data: ".Length..];
            else if (line.Length == 0 && name is not null)
                return (name, JsonNode.Parse(data!)!);
        }
        return null;
    }
}
