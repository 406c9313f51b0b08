using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Sandbox.Audited.Api.Policies;
using Sandbox.Audited.Executor.Docker;
using Sandbox.Audited.Executor.Sandboxes;
using Microsoft.Extensions.DependencyInjection;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Policies;

/// <summary>The shipped bundle (policies/default.yaml) through the real API.</summary>
[Collection(Infrastructure.ServiceCollection.Name)]
public sealed class DefaultBundleTests(ServiceFixture service)
{
    private const string Tenant = "tenant-default-policy";

    private string ShippedDigest => PolicyDirectory.Load(Path.Combine(TestEnvironment.RepoRoot, "policies")).Digest;

    [Fact]
    public async Task RunnerIsAllowedByTheDefaultBundle()
    {
        var (response, run) = await service.Runner("ivy", Tenant).RunAsync(new { language = "python", code = "print(6 * 7)" });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("allow", run.Str("policy.decision"));
        Assert.Equal(ShippedDigest, run.Str("policy.bundleDigest"));
        Assert.Equal("runners-default", run["policy"]!["ruleIds"]!.AsArray().Single()!.ToString());
        Assert.Equal("42\n", run.Str("stdout.content"));
    }

    [Fact]
    public async Task AuditorOnlyCallerIsDeniedByTheDefaultBundle()
    {
        var decision = await EvaluateAsync(new { roles = new[] { "auditor" }, language = "python", code = "print(1)" });

        Assert.Equal("deny", decision.Str("decision"));
        Assert.Empty(decision["ruleIds"]!.AsArray());
        Assert.True(decision["reasons"]!.AsArray().Count == 1, decision.ToJsonString());
        Assert.StartsWith("no permit rule matched", decision["reasons"]![0]!.ToString());
    }

    [Fact]
    public async Task RestrictedDataWithoutReviewerIsDeniedWith403AndRecordedAndNothingRuns()
    {
        var (response, body) = await service.Runner("jack", Tenant).RunAsync(new { language = "python", code = "print('secret')", classification = "restricted" });

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal("/problems/policy-denied", body.Str("type"));
        var runId = Guid.Parse(body.Str("runId"));
        Assert.Contains(body["reasons"]!.AsArray(), r => r!.ToString().Contains("restricted-needs-reviewer"));
        Assert.Equal("restricted-needs-reviewer", body["ruleIds"]!.AsArray().Single()!.ToString());

        var types = await EventTypesAsync(runId);
        Assert.Equal(["run_requested", "policy_evaluated", "run_completed"], types);
        Assert.Equal("deny", await service.Database.ScalarAsync<string>(
            "SELECT data ->> 'decision' FROM sandbox.mt_events WHERE stream_id = $1 AND type = 'policy_evaluated'", runId));
        var containers = await service.Services.GetRequiredService<DockerEngine>()
            .ListByLabelAsync($"{ContainerSpec.RunLabel}={runId:D}", CancellationToken.None);
        Assert.Empty(containers);
    }

    [Fact]
    public async Task UnknownClassificationIsRejectedWith400()
    {
        var (response, body) = await service.Runner("jack", Tenant).RunAsync(new { language = "python", code = "print(1)", classification = "cosmic" });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("Unknown classification 'cosmic'", body.Str("detail"));
        Assert.Equal(["request_rejected", "run_completed"], await EventTypesAsync(Guid.Parse(body.Str("runId"))));
    }

    [Fact]
    public async Task ActivePolicyShowsTheShippedBundleItsFilesAndRules()
    {
        var (response, policy) = await service.Client(service.Token("kim", Tenant, "auditor")).GetJsonAsync("/v1/policies");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(ShippedDigest, policy.Str("digest"));
        Assert.Equal("default.yaml", policy["files"]!.AsArray().Single()!.Str("path"));
        var rules = policy["rules"]!.AsArray();
        Assert.Contains(rules, r => r!.Str("id") == "restricted-needs-reviewer" && r!.Str("kind") == "forbid" && r!.Str("conditions.classifications").Contains("restricted"));
        Assert.Contains(rules, r => r!.Str("id") == "runners-default" && r!.Str("limits.memoryMb") == "256");
        Assert.Equal("128", policy.Str("defaults.memoryMb"));
        Assert.Equal("512", policy.Str("ceilings.memoryMb"));
        Assert.Equal("startup", policy.Str("trigger"));
    }

    [Fact]
    public async Task StoredBundleContentIsReadableByDigest()
    {
        var (response, bundle) = await service.Client(service.Token("kim", Tenant, "auditor")).GetJsonAsync($"/v1/policies/bundles/{ShippedDigest}");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var file = bundle["files"]!.AsArray().Single()!;
        Assert.Equal(File.ReadAllText(Path.Combine(TestEnvironment.RepoRoot, "policies", "default.yaml")), file.Str("content"));
        Assert.Equal(HttpStatusCode.NotFound, (await service.Client(service.Token("kim", Tenant, "auditor")).GetAsync($"/v1/policies/bundles/{new string('0', 64)}")).StatusCode);
    }

    [Fact]
    public async Task RunnerCannotReadOrEvaluatePolicies()
    {
        var runner = service.Runner("ivy", Tenant);

        Assert.Equal(HttpStatusCode.Forbidden, (await runner.GetAsync("/v1/policies")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await runner.PostAsJsonAsync("/v1/policies/evaluate", new { language = "python" })).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await service.Client(service.Token("kim", Tenant, "auditor")).PostAsync("/v1/policies/reload", null)).StatusCode);
        // A tenant's admin administers that tenant, not the bundle that decides every tenant's runs.
        Assert.Equal(HttpStatusCode.Forbidden, (await service.Client(service.Token("kai", Tenant, "admin")).PostAsync("/v1/policies/reload", null)).StatusCode);
    }

    [Fact]
    public async Task EvaluateIsADryRunThatRecordsNoRun()
    {
        var streams = await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_streams");
        var requests = await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events WHERE type IN ('run_requested', 'request_rejected')");

        var decision = await EvaluateAsync(new { subject = "lee", tenant = Tenant, roles = new[] { "runner" }, language = "js", limits = new { memoryMb = 1024 }, code = "console.log(1)" });

        Assert.Equal("allow", decision.Str("decision"));
        Assert.Equal(ShippedDigest, decision.Str("bundleDigest"));
        Assert.Equal("256", decision.Str("limits.memoryMb"));
        Assert.Contains(decision["reasons"]!.AsArray(), r => r!.ToString() == "memoryMb 1024 requested, clamped to 256 by rule runners-default");
        Assert.Equal(streams, await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_streams"));
        Assert.Equal(requests, await service.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events WHERE type IN ('run_requested', 'request_rejected')"));
    }

    [Theory]
    [InlineData("{\"language\": \"cobol\"}")]
    [InlineData("{\"language\": \"python\", \"classification\": \"cosmic\"}")]
    [InlineData("{\"language\": \"python\", \"limits\": {\"memoryMb\": 0}}")]
    public async Task EvaluateRefusesInvalidInputWith400(string json)
    {
        var response = await service.Client(service.Token("kim", Tenant, "auditor"))
            .PostAsync("/v1/policies/evaluate", new StringContent(json, System.Text.Encoding.UTF8, "application/json"));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
    }

    [Fact]
    public async Task ReplayOfARunUnderTheDefaultBundleIsTheSame()
    {
        var (_, run) = await service.Runner("ivy", Tenant).RunAsync(new { language = "shell", code = "echo replay", classification = "public", limits = new { memoryMb = 500 } });

        var (response, replay) = await service.Client(service.Token("kim", Tenant, "auditor")).GetJsonAsync($"/v1/audit/runs/{run.Str("runId")}/replay");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("true", replay.Str("same"));
        Assert.Equal(ShippedDigest, replay.Str("bundleDigest"));
        Assert.Equal("256", replay.Str("replayed.limits.memoryMb"));
        Assert.Empty(replay["differences"]!.AsArray());
    }

    private async Task<JsonNode> EvaluateAsync(object input)
    {
        var response = await service.Client(service.Token("kim", Tenant, "auditor")).PostAsJsonAsync("/v1/policies/evaluate", input, ApiCalls.Json);
        var body = await ApiCalls.BodyAsync(response);
        Assert.True(response.StatusCode == HttpStatusCode.OK, body.ToJsonString());
        return body;
    }

    private async Task<List<string>> EventTypesAsync(Guid runId)
    {
        await using var connection = new Npgsql.NpgsqlConnection(service.Database.AdminConnection);
        await connection.OpenAsync();
        await using var command = new Npgsql.NpgsqlCommand("SELECT type FROM sandbox.mt_events WHERE stream_id = $1 ORDER BY version", connection);
        command.Parameters.AddWithValue(runId);
        var types = new List<string>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
            types.Add(reader.GetString(0));
        return types;
    }
}
