using System.Net;
using System.Text.RegularExpressions;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Contract;

/// <summary>A run's server-sent events: ids, retry, Last-Event-ID, and a standard EventSource client (npm `eventsource`).</summary>
[Collection(ContractCollection.Name)]
public sealed class StreamContractTests(ContractFixture service)
{
    private const string Tenant = "tenant-contract";

    [Fact]
    public async Task EventSourceClientSeesEachMessageOnceResumesAndStops() =>
        await service.RunAsync("node", ["--test", "--test-reporter=spec", "eventsource.test.mjs"], new Dictionary<string, string>
        {
            ["SBX_RUNNER_TOKEN"] = service.Token("esther", Tenant, Roles.Runner),
        });

    [Fact]
    public async Task EveryMessageHasAnIdTheFirstARetryAndLastEventIdResumesAfterIt()
    {
        var client = service.Runner("elio", Tenant);
        var (_, body) = await client.RunAsync(new { language = "shell", code = "echo one; echo two >&2" });
        var path = $"/v1/runs/{body.Str("runId")}/stream";
        // The sandbox's removal is recorded after the answer: wait for it, so that both reads below see the same history.
        await Eventually.WaitUntilAsync(async () => (await client.GetStringAsync($"/v1/runs/{body.Str("runId")}/events")).Contains("sandbox_removed"),
            () => "the run's sandbox_removed was not recorded", TimeSpan.FromSeconds(30));

        var whole = await client.GetStringAsync(path);
        var messages = whole.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.All(messages, m => Assert.Matches(@"(^|\n)id: \S+", m));
        Assert.Matches(@"(^|\n)retry: \d+", messages[0]);
        Assert.Equal("id: end", Regex.Match(messages[^1], "id: .*").Value);

        var afterFirst = Regex.Match(messages[0], @"id: (\S+)").Groups[1].Value;
        var resumed = await GetAsync(client, path, afterFirst);
        Assert.Equal(HttpStatusCode.OK, resumed.StatusCode);
        var rest = (await resumed.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(messages.Skip(1).Select(EventAndData), rest.Select(EventAndData));

        Assert.Equal(HttpStatusCode.NoContent, (await GetAsync(client, path, "end")).StatusCode);
        var invalid = await GetAsync(client, path, "not-an-id");
        Assert.Equal(HttpStatusCode.BadRequest, invalid.StatusCode);
        Assert.Equal("/problems/invalid-request", (await ApiCalls.BodyAsync(invalid)).Str("type"));
    }

    private static string EventAndData(string message) => string.Join('\n', message.Split('\n').Where(l => l.StartsWith("event:") || l.StartsWith("data:")));

    private static Task<HttpResponseMessage> GetAsync(HttpClient client, string path, string lastEventId)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, path);
        request.Headers.Add("Last-Event-ID", lastEventId);
        return client.SendAsync(request);
    }
}
