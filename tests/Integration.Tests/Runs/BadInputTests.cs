using System.Net;
using System.Net.Http.Headers;
using System.Text;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Runs;

[Collection(ServiceCollection.Name)]
public sealed class BadInputTests(ServiceFixture service)
{
    private const string Tenant = "tenant-bad-input";

    [Theory]
    [InlineData("{\"language\": \"python\", \"code\": ", "/problems/invalid-request")]
    [InlineData("{\"language\": \"cobol\", \"code\": \"DISPLAY 1\"}", "/problems/invalid-request")]
    [InlineData("{\"language\": \"python\", \"code\": \"   \"}", "/problems/invalid-request")]
    [InlineData("{\"language\": \"python\", \"code\": \"print(1)\", \"network\": true}", "/problems/invalid-request")]
    [InlineData("{\"language\": \"python\", \"code\": \"print(1)\", \"classification\": \"top-secret\"}", "/problems/invalid-request")]
    [InlineData("[1, 2]", "/problems/invalid-request")]
    public async Task InvalidRequestsAreRejectedWith400AndRecorded(string json, string problemType)
    {
        var client = service.Runner("frank", Tenant);
        var response = await client.PostAsync("/v1/runs", new StringContent(json, Encoding.UTF8, "application/json"));
        var body = await ApiCalls.BodyAsync(response);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal(problemType, body.Str("type"));
        await AssertRejectionRecordedAsync(body.Str("runId"), 400);
    }

    [Fact]
    public async Task CodeOver256KiBIsRejectedWith413AndRecorded()
    {
        var (response, body) = await service.Runner("frank", Tenant).RunAsync(new { language = "python", code = new string('#', 256 * 1024 + 1) });

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Equal("/problems/payload-too-large", body.Str("type"));
        await AssertRejectionRecordedAsync(body.Str("runId"), 413);
    }

    [Fact]
    public async Task RunWithoutTokenIsRejectedAndNothingRuns()
    {
        const string requests = "SELECT count(*) FROM sandbox.mt_events WHERE type IN ('run_requested', 'request_rejected')";
        var before = await service.Database.ScalarAsync<long>(requests);

        var (response, _) = await service.Client().RunAsync(new { language = "shell", code = "echo no" });

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal(before, await service.Database.ScalarAsync<long>(requests));
    }

    [Theory]
    [InlineData("not-a-jwt")]
    [InlineData("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJtYWxsb3J5IiwidGVuYW50IjoieCIsInJvbGVzIjpbInJ1bm5lciJdfQ.")]
    public async Task RunWithInvalidTokenIsRejected(string token)
    {
        var client = service.Client();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);

        var (response, _) = await client.RunAsync(new { language = "shell", code = "echo no" });

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
    }

    [Fact]
    public async Task TokenSignedWithAnotherKeyIsRejected()
    {
        var otherKey = Path.Combine(Path.GetTempPath(), "sbx-other-" + Guid.NewGuid().ToString("N") + ".pem");
        Sandbox.Audited.Api.Auth.DevelopmentKeys.Create(otherKey);
        var options = service.Auth;
        options.DevelopmentKeyPath = otherKey;
        var forged = Sandbox.Audited.Api.Auth.DevelopmentTokens.Mint(options, "mallory", Tenant, ["runner"], TimeSpan.FromMinutes(5));
        File.Delete(otherKey);

        var (response, _) = await service.Client(forged).RunAsync(new { language = "shell", code = "echo no" });

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
    }

    [Fact]
    public async Task AuditorCannotStartARun()
    {
        var (response, body) = await service.Client(service.Token("gina", Tenant, "auditor")).RunAsync(new { language = "shell", code = "echo no" });

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal("/problems/forbidden", body.Str("type"));
        await AssertRejectionRecordedAsync(body.Str("runId"), 403);
    }

    private async Task AssertRejectionRecordedAsync(string runId, int status)
    {
        var id = Guid.Parse(runId);
        var types = new List<string>();
        await using var connection = new Npgsql.NpgsqlConnection(service.Database.AdminConnection);
        await connection.OpenAsync();
        await using var command = new Npgsql.NpgsqlCommand("SELECT type, data ->> 'httpStatus' FROM sandbox.mt_events WHERE stream_id = $1 ORDER BY version", connection);
        command.Parameters.AddWithValue(id);
        await using var reader = await command.ExecuteReaderAsync();
        string? recordedStatus = null;
        while (await reader.ReadAsync())
        {
            types.Add(reader.GetString(0));
            if (!reader.IsDBNull(1)) recordedStatus = reader.GetString(1);
        }
        Assert.Equal(["request_rejected", "run_completed"], types);
        Assert.Equal(status.ToString(), recordedStatus);
    }
}
