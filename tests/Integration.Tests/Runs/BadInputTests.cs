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

    // Each smuggles something the old lenient parser accepted: unknown members at depth, numbers as strings,
    // keys in another case, repeated keys (last one won), limits the engine reads as "unlimited" or refuses.
    [Theory]
    [InlineData("{\"language\":\"shell\",\"code\":\"echo\",\"limits\":{\"timeoutMs\":1000,\"privileged\":true}}", "limits.privileged")]
    [InlineData("{\"language\":\"shell\",\"code\":\"echo\",\"files\":[{\"name\":\"a\",\"content\":\"x\",\"mode\":\"4755\"}]}", "mode")]
    [InlineData("{\"language\":\"shell\",\"code\":\"echo\",\"limits\":{\"timeoutMs\":\"1000\"}}", "limits.timeoutMs")]
    [InlineData("{\"Language\":\"shell\",\"code\":\"echo\"}", "Language")]
    [InlineData("{\"language\":\"shell\",\"code\":\"echo\",\"limits\":{\"TimeoutMs\":1000}}", "TimeoutMs")]
    [InlineData("{\"language\":\"shell\",\"code\":\"echo\",\"code\":\"echo again\"}", "code")]
    [InlineData("{\"language\":\"shell\",\"code\":\"echo\",\"limits\":{\"pids\":64,\"pids\":100000}}", "pids")]
    [InlineData("{\"language\":\"shell\",\"code\":\"echo\",\"limits\":{\"cpus\":1e-300}}", "0.01 to 2")]
    [InlineData("{\"language\":\"shell\",\"code\":\"echo\",\"limits\":{\"cpus\":0.001}}", "0.01 to 2")]
    [InlineData("{\"language\":\"shell\",\"code\":\"echo\",\"limits\":{\"cpus\":0.555}}", "hundredths")]
    [InlineData("{\"language\":\"shell\",\"code\":\"echo\",\"limits\":{\"cpus\":64}}", "0.01 to 2")]
    [InlineData("{\"language\":\"shell\",\"code\":\"echo\",\"limits\":{\"pids\":1}}", "16 to 256")]
    [InlineData("{\"language\":\"shell\",\"code\":\"echo\",\"limits\":{\"memoryMb\":1}}", "16 to 512")]
    [InlineData("{\"language\":\"shell\",\"code\":\"echo\",\"limits\":{\"timeoutMs\":999999}}", "1 to 60000")]
    [InlineData("{\"language\":\"shell\",\"code\":\"echo\",\"limits\":{\"timeoutMs\":1.5}}", "limits.timeoutMs")]
    [InlineData("{\"language\":\"shell\",\"code\":\"echo\",\"files\":[{\"name\":null,\"content\":\"x\"}]}", "Null is not allowed")]
    public async Task SmuggledOrOutOfRangeInputIsA400NamingItAndRecorded(string json, string named)
    {
        var response = await service.Runner("frank", Tenant).PostAsync("/v1/runs", new StringContent(json, Encoding.UTF8, "application/json"));
        var body = await ApiCalls.BodyAsync(response);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("/problems/invalid-request", body.Str("type"));
        Assert.Contains(named, body.Str("detail"));
        await AssertRejectionRecordedAsync(body.Str("runId"), 400);
    }

    [Fact]
    public async Task DuplicateKeysWithAnIdempotencyKeyAreA400AndRecorded()
    {
        var client = service.Runner("frank", Tenant);
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/runs")
        {
            Content = new StringContent("{\"language\":\"shell\",\"code\":\"echo a\",\"code\":\"echo b\"}", Encoding.UTF8, "application/json"),
        };
        request.Headers.Add("Idempotency-Key", "dup-" + Guid.NewGuid().ToString("N"));

        var response = await client.SendAsync(request);
        var body = await ApiCalls.BodyAsync(response);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        await AssertRejectionRecordedAsync(body.Str("runId"), 400);
    }

    [Fact]
    public async Task CpusAreRecordedAsEnforcedInHundredths()
    {
        var (response, run) = await service.Runner("frank", Tenant).RunAsync(new { language = "shell", code = "echo ok", limits = new { cpus = 0.29 } });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("0.29", run.Str("limits.cpus"));
    }

    [Fact]
    public async Task ThousandsOfBadArgsGiveABoundedErrorList()
    {
        var args = Enumerable.Range(0, 20000).Select(_ => "a\0b").ToArray();

        var (response, body) = await service.Runner("frank", Tenant).RunAsync(new { language = "shell", code = "echo", args });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var errors = body["errors"]!.AsArray();
        Assert.Equal(21, errors.Count);
        Assert.Contains("more error", errors[^1]!.ToString());
        Assert.True(body.ToJsonString().Length < 8192, "the answer stays small");
        await AssertRejectionRecordedAsync(body.Str("runId"), 400);
    }

    [Theory]
    [InlineData("language")]
    [InlineData("classification")]
    [InlineData("isolation")]
    [InlineData("runtime")]
    public async Task ANulInAnEchoedFieldIsARecorded400NotAStoreFailure(string field)
    {
        var request = new Dictionary<string, object> { ["language"] = "python", ["code"] = "print(1)", [field] = "py\0thon" };

        var (response, body) = await service.Runner("frank", Tenant).RunAsync(request);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("'py\\u0000thon'", body.Str("detail"));
        await AssertRejectionRecordedAsync(body.Str("runId"), 400);
    }

    [Fact]
    public async Task AHugeEchoedFieldGivesAShortAnswerAndAShortRecord()
    {
        var noise = string.Concat(Enumerable.Range(0, 40_000).Select(i => (char)('a' + i % 26)));

        var (response, body) = await service.Runner("frank", Tenant).RunAsync(new { language = noise, classification = noise, isolation = noise, code = "x" });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.True(body.ToJsonString().Length < 4096, $"the answer is {body.ToJsonString().Length} characters");
        Assert.Contains("(40000 characters)", body.Str("detail"));
        await AssertRejectionRecordedAsync(body.Str("runId"), 400);
        var recorded = await service.Database.ScalarAsync<int>(
            "SELECT max(length(data::text)) FROM sandbox.mt_events WHERE stream_id = $1", Guid.Parse(body.Str("runId")));
        Assert.True(recorded < 4096, $"an event of {recorded} characters was recorded");
    }

    [Fact]
    public async Task ALoneSurrogateIsNamedAsInvalidTextNotAsAWrongType()
    {
        using var content = new StringContent("{\"language\":\"python\",\"code\":\"print('\\ud800')\"}", System.Text.Encoding.UTF8, "application/json");

        var response = await service.Runner("frank", Tenant).PostAsync("/v1/runs", content);
        var body = await ApiCalls.BodyAsync(response);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.StartsWith("Invalid text at '$.code'", body.Str("detail"));
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
    public async Task FormAndJsonAreRejectedByTheSameRules()
    {
        var client = service.Runner("frank", Tenant);
        var code = new string('#', 256 * 1024 + 1);
        var (json, jsonBody) = await client.RunAsync(new { language = "python", code, args = new[] { "a\0" } });
        using var form = new MultipartFormDataContent
        {
            { new StringContent("python"), "language" },
            { new StringContent(code), "code" },
            { new StringContent("[\"a\\u0000\"]"), "args" },
        };
        var multipart = await client.PostAsync("/v1/runs", form);
        var formBody = await ApiCalls.BodyAsync(multipart);

        Assert.Equal((HttpStatusCode.RequestEntityTooLarge, HttpStatusCode.RequestEntityTooLarge), (json.StatusCode, multipart.StatusCode));
        Assert.Equal(jsonBody["errors"]!.ToJsonString(), formBody["errors"]!.ToJsonString());
        Assert.Equal(2, formBody["errors"]!.AsArray().Count);
        await AssertRejectionRecordedAsync(formBody.Str("runId"), 413);
    }

    [Theory]
    [InlineData("code")]
    [InlineData("stdin")]
    public async Task AFormTextFieldThatIsNotUtf8IsA400RecordedAndItsFilesAreDeleted(string field)
    {
        using var form = new MultipartFormDataContent { { new StringContent("python"), "language" } };
        form.Add(new ByteArrayContent(new byte[200_000]), "data.bin", "data.bin");
        if (field == "stdin")
            form.Add(new StringContent("print(1)"), "code");
        form.Add(new ByteArrayContent([0x70, 0x72, 0xff, 0x0a]), field);
        var response = await service.Runner("frank", Tenant).PostAsync("/v1/runs", form);
        var body = await ApiCalls.BodyAsync(response);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains($"'{field}' is not valid UTF-8", body.Str("detail"));
        await AssertRejectionRecordedAsync(body.Str("runId"), 400);
        Assert.Empty(Directory.Exists(service.SpoolDirectory) ? Directory.GetDirectories(service.SpoolDirectory, "in-*") : []);
    }

    [Fact]
    public async Task TooManyFilesInAFormAreRefusedByTheFileCountRule()
    {
        using var form = new MultipartFormDataContent { { new StringContent("shell"), "language" }, { new StringContent("ls"), "code" } };
        for (var i = 0; i < 33; i++)
            form.Add(new ByteArrayContent([1]), $"f{i}", $"f{i}");
        var response = await service.Runner("frank", Tenant).PostAsync("/v1/runs", form);
        var body = await ApiCalls.BodyAsync(response);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("At most 32 files are allowed; got 33.", body.Str("detail"));
        await AssertRejectionRecordedAsync(body.Str("runId"), 400);
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
