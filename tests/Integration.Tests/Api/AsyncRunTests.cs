using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Api;

/// <summary>Runs that take time: 202 + Location and polling, server-sent events, idempotency keys.</summary>
[Collection(ApiCollection.Name)]
public sealed class AsyncRunTests(ApiFixture service)
{
    private const string Tenant = "tenant-async";
    private const string PrintSleepPrint = "import time\nprint('one', flush=True)\ntime.sleep(0.3)\nprint('two', flush=True)";

    [Fact]
    public async Task RunWithoutWaitingAnswers202WithLocationAndCanBePolled()
    {
        var client = service.Runner("polly", Tenant);

        var (response, body) = await client.RunAsync(new { language = "python", code = PrintSleepPrint, wait = false });

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var location = response.Headers.Location?.ToString();
        Assert.Equal($"/v1/runs/{body.Str("runId")}", location);
        var run = await PollUntilFinishedAsync(client, location!);
        Assert.Equal("succeeded", run.Str("status"));
        Assert.Equal("one\ntwo\n", run.Str("stdout.content"));
    }

    [Fact]
    public async Task StreamDeliversLifecycleAndOutputAsItHappens()
    {
        var client = service.Runner("stella", Tenant);
        var (accepted, body) = await client.RunAsync(new { language = "python", code = PrintSleepPrint, wait = false });
        Assert.Equal(HttpStatusCode.Accepted, accepted.StatusCode);

        var events = await ReadStreamAsync(client, $"/v1/runs/{body.Str("runId")}/stream");

        var names = events.Select(e => e.Name).ToList();
        Assert.Equal(["run_requested", "policy_evaluated"], names.Take(2));
        Assert.Equal("end", names[^1]);
        Assert.Equal("succeeded", events[^1].Data.Str("status"));
        Assert.Equal("one\ntwo\n", string.Concat(events.Where(e => e.Name == "stdout").Select(e => e.Data.Str("text"))));
        // Output arrived while the run was going on: before the sandbox's exit was recorded.
        Assert.True(names.IndexOf("sandbox_running") < names.IndexOf("stdout"));
        Assert.True(names.IndexOf("stdout") < names.IndexOf("sandbox_exited"));
        Assert.True(names.IndexOf("sandbox_exited") < names.IndexOf("run_completed"));
        Assert.Single(names, "run_completed");
    }

    [Fact]
    public async Task StreamOfAFinishedRunReplaysItsEventsAndCloses()
    {
        var client = service.Runner("rita", Tenant);
        var (done, body) = await client.RunAsync(new { language = "python", code = PrintSleepPrint });
        Assert.Equal(HttpStatusCode.OK, done.StatusCode);

        var events = await ReadStreamAsync(client, $"/v1/runs/{body.Str("runId")}/stream");

        var names = events.Select(e => e.Name).ToList();
        Assert.Equal(["run_requested", "policy_evaluated", "run_queued", "sandbox_created", "sandbox_started", "sandbox_exited", "output_recorded", "run_completed"],
            names.Where(n => n is not ("stdout" or "stderr" or "end" or "sandbox_removed")));
        Assert.Equal("one\ntwo\n", string.Concat(events.Where(e => e.Name == "stdout").Select(e => e.Data.Str("text"))));
        Assert.Equal("end", names[^1]);
    }

    [Fact]
    public async Task OnlyTheOwnerMayStreamARun()
    {
        var (_, body) = await service.Runner("olive", Tenant).RunAsync(new { language = "shell", code = "echo mine" });

        var response = await service.Runner("oscar", Tenant).GetAsync($"/v1/runs/{body.Str("runId")}/stream");

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal("/problems/not-found", (await ApiCalls.BodyAsync(response)).Str("type"));
    }

    [Fact]
    public async Task SameIdempotencyKeyAndBodyReturnTheSameRunWithoutRunningAgain()
    {
        var client = service.Runner("ida", Tenant);
        var request = new { language = "shell", code = "echo once" };

        var first = await PostWithKeyAsync(client, "key-same", request);
        var second = await PostWithKeyAsync(client, "key-same", request);

        Assert.Equal(HttpStatusCode.OK, first.Response.StatusCode);
        Assert.Equal(HttpStatusCode.OK, second.Response.StatusCode);
        Assert.Equal(first.Body.Str("runId"), second.Body.Str("runId"));
        Assert.Equal("once\n", second.Body.Str("stdout.content"));
        Assert.Equal("true", second.Response.Headers.GetValues("Idempotent-Replayed").Single());
        Assert.Equal(1, await service.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.mt_events WHERE type = 'run_requested' AND data -> 'caller' ->> 'subject' = 'ida'"));
    }

    [Fact]
    public async Task AnIdempotencyKeyPastItsRetentionStartsANewRun()
    {
        var client = service.Runner("iris", Tenant);
        var request = new { language = "shell", code = "echo again" };
        var first = await PostWithKeyAsync(client, "key-old", request);

        // A day and an hour later (the retention is 24 hours by default).
        await service.Database.ExecuteAsync(
            "UPDATE sandbox.idempotency_keys SET created_at = now() - interval '25 hours' WHERE subject = 'iris' AND key = 'key-old'");
        var later = await PostWithKeyAsync(client, "key-old", request);
        var replay = await PostWithKeyAsync(client, "key-old", request);

        Assert.Equal(HttpStatusCode.OK, later.Response.StatusCode);
        Assert.NotEqual(first.Body.Str("runId"), later.Body.Str("runId"));
        Assert.False(later.Response.Headers.Contains("Idempotent-Replayed"));
        Assert.Equal(later.Body.Str("runId"), replay.Body.Str("runId")); // and the key now names the new run
        Assert.Equal(2, await service.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.mt_events WHERE type = 'run_requested' AND data -> 'caller' ->> 'subject' = 'iris'"));
    }

    [Fact]
    public async Task SameIdempotencyKeyWhileRunningReturns202ForTheSameRun()
    {
        var client = service.Runner("ivan", Tenant);
        var request = new { language = "python", code = "import time\ntime.sleep(1)\nprint('slow')", wait = false };

        var first = await PostWithKeyAsync(client, "key-running", request);
        var second = await PostWithKeyAsync(client, "key-running", request);

        Assert.Equal(HttpStatusCode.Accepted, first.Response.StatusCode);
        Assert.Equal(HttpStatusCode.Accepted, second.Response.StatusCode);
        Assert.Equal(first.Body.Str("runId"), second.Body.Str("runId"));
        Assert.Equal("slow\n", (await PollUntilFinishedAsync(client, $"/v1/runs/{first.Body.Str("runId")}")).Str("stdout.content"));
    }

    [Fact]
    public async Task SameIdempotencyKeyWithAnotherBodyIsRefusedWith422()
    {
        var client = service.Runner("isla", Tenant);

        var first = await PostWithKeyAsync(client, "key-conflict", new { language = "shell", code = "echo a" });
        var second = await PostWithKeyAsync(client, "key-conflict", new { language = "shell", code = "echo b" });

        Assert.Equal(HttpStatusCode.OK, first.Response.StatusCode);
        Assert.Equal((HttpStatusCode)422, second.Response.StatusCode);
        Assert.Equal("/problems/idempotency-conflict", second.Body.Str("type"));
        Assert.Equal(1, await service.Database.ScalarAsync<long>(
            "SELECT count(*) FROM sandbox.mt_events WHERE type = 'run_requested' AND data -> 'caller' ->> 'subject' = 'isla'"));
        Assert.Equal(422L, await service.Database.ScalarAsync<long>(
            "SELECT (data ->> 'httpStatus')::bigint FROM sandbox.mt_events WHERE type = 'request_rejected' AND data -> 'caller' ->> 'subject' = 'isla'"));
    }

    public sealed record SseEvent(string Name, JsonNode Data);

    public static async Task<List<SseEvent>> ReadStreamAsync(HttpClient client, string path)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        using var response = await client.GetAsync(path, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(timeout.Token), Encoding.UTF8);
        var events = new List<SseEvent>();
        string? name = null;
        while (await reader.ReadLineAsync(timeout.Token) is { } line)
        {
            if (line.StartsWith("event: ", StringComparison.Ordinal))
                name = line["event: ".Length..];
            else if (line.StartsWith("data: ", StringComparison.Ordinal))
                events.Add(new SseEvent(name!, JsonNode.Parse(line["data: ".Length..])!));
        }
        return events;
    }

    private static async Task<(HttpResponseMessage Response, JsonNode Body)> PostWithKeyAsync(HttpClient client, string key, object request)
    {
        using var message = new HttpRequestMessage(HttpMethod.Post, "/v1/runs") { Content = JsonContent.Create(request, options: ApiCalls.Json) };
        message.Headers.Add("Idempotency-Key", key);
        var response = await client.SendAsync(message);
        return (response, await ApiCalls.BodyAsync(response));
    }

    public static async Task<JsonNode> PollUntilFinishedAsync(HttpClient client, string location)
    {
        JsonNode run = new JsonObject();
        await Eventually.WaitUntilAsync(async () =>
        {
            (var response, run) = await client.GetJsonAsync(location);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            return run.Str("completedAt").Length > 0;
        }, () => $"run at {location} did not finish within 30 s", TimeSpan.FromSeconds(30));
        return run;
    }
}
