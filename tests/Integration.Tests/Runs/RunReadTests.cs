using System.Net;
using System.Net.Http.Json;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Runs;

/// <summary>Reading runs: who read whose code and output is recorded; nothing that carries them is cached; no banner.</summary>
[Collection(Infrastructure.ServiceCollection.Name)]
public sealed class RunReadTests(ServiceFixture service)
{
    [Fact]
    public async Task AnAuditorReadingAnotherPersonsRunIsRecordedInTheAccessLog()
    {
        var tenant = "tenant-read-" + Guid.NewGuid().ToString("N")[..8];
        var (_, run) = await service.Runner("rae", tenant).RunAsync(new { language = "shell", code = "echo secret" });
        var runId = run.Str("runId");
        var auditor = service.Client(service.Token("abe", tenant, "auditor"));

        Assert.Equal(HttpStatusCode.OK, (await auditor.GetAsync($"/v1/runs/{runId}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await auditor.GetAsync($"/v1/runs/{runId}/events")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await service.Runner("rae", tenant).GetAsync($"/v1/runs/{runId}")).StatusCode); // one's own: not recorded

        var (_, log) = await auditor.GetJsonAsync("/v1/audit/events?type=audit_accessed");
        var reads = log["items"]!.AsArray().Where(e => e!.Str("data.action").StartsWith("read_run", StringComparison.Ordinal)).ToList();
        Assert.Equal(["read_run", "read_run_events"], reads.Select(e => e!.Str("data.action")));
        Assert.All(reads, e => Assert.Equal(("abe", runId, "rae"), (e!.Str("data.caller.subject"), e!.Str("data.filter.runId"), e!.Str("data.filter.subject"))));
    }

    [Fact]
    public async Task AnswersCarryingCodeOrOutputAreNotCachedAndNoServerBannerIsSent()
    {
        var runner = service.Runner("cas", "tenant-read");
        var (posted, run) = await runner.RunAsync(new { language = "shell", code = "echo cached?" });
        var fetched = await runner.GetAsync($"/v1/runs/{run.Str("runId")}");

        Assert.True(posted.Headers.CacheControl?.NoStore, "POST /v1/runs without Cache-Control: no-store");
        Assert.True(fetched.Headers.CacheControl?.NoStore, "GET /v1/runs/{id} without Cache-Control: no-store");
        Assert.False(service.Services.GetRequiredService<IOptions<KestrelServerOptions>>().Value.AddServerHeader);
    }

    [Fact]
    public async Task TheCorrelationIdIsTheServersAndTheClientsTraceparentIsKeptApart()
    {
        const string borrowed = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/runs") { Content = JsonContent.Create(new { language = "shell", code = "true" }) };
        request.Headers.Add("traceparent", borrowed);

        var response = await service.Runner("tam", "tenant-read").SendAsync(request);
        var runId = (await ApiCalls.BodyAsync(response)).Str("runId");

        var (correlation, clientTrace) = (
            await service.Database.ScalarAsync<string>("SELECT data -> 'client' ->> 'correlationId' FROM sandbox.mt_events WHERE stream_id = $1::uuid AND version = 1", Guid.Parse(runId)),
            await service.Database.ScalarAsync<string>("SELECT data -> 'client' ->> 'clientTraceparent' FROM sandbox.mt_events WHERE stream_id = $1::uuid AND version = 1", Guid.Parse(runId)));
        Assert.DoesNotContain("0af7651916cd43dd8448eb211c80319c", correlation);
        Assert.Equal(borrowed, clientTrace);
    }
}
