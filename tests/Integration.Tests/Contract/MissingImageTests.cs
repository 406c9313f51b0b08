using System.Net;
using System.Text.Json.Nodes;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Contract;

/// <summary>
/// A service whose javascript image the engine does not have (no warm pools, so nothing retries in the background), and
/// whose spool sits under a regular file, so that no upload can be spooled: what a client is told of either failure.
/// </summary>
public sealed class MissingImageFixture : ServiceFixture
{
    /// <summary>A regular file where the spool's parent directory should be.</summary>
    public string NotADirectory { get; } = Path.GetTempFileName();

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Executor:Images:javascript"] = "sbx-contract-missing:none",
        ["Executor:PoolSizePerLanguage"] = "0",
        ["Executor:SpoolDirectory"] = Path.Combine(NotADirectory, "spool"),
    };

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        File.Delete(NotADirectory);
    }
}

public sealed class MissingImageTests(MissingImageFixture service) : IClassFixture<MissingImageFixture>
{
    [Fact]
    public async Task ABillOfMaterialsWhoseImageCannotBeInspectedIsA503WithRetryAfter()
    {
        using var client = service.Runner("mia", "tenant-missing-image");
        using var response = await client.GetAsync("/v1/runtimes/javascript/sbom");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        Assert.Equal("/problems/sandbox-unavailable", (string?)problem["type"]);
        Assert.True(response.Headers.RetryAfter?.Delta is { TotalSeconds: >= 1 }, $"Retry-After: {response.Headers.RetryAfter}");
        // What to do, not what the engine said ("No such image: …").
        Assert.Equal("The image of runtime 'javascript' cannot be read now: it is not on this node's container engine (an operator builds it with ./sbx up). Retry later.",
            (string?)problem["detail"]);
    }

    [Fact]
    public async Task TheCatalogueSaysWhyAnImageIsUnavailableInItsOwnWords()
    {
        using var client = service.Runner("mia", "tenant-missing-image");
        var runtimes = JsonNode.Parse(await client.GetStringAsync("/v1/runtimes"))!.AsArray();

        Assert.Equal("image unavailable: it is not on this node's container engine (an operator builds it with ./sbx up)",
            (string?)runtimes.Single(r => (string?)r!["id"] == "javascript")!["error"]);
        Assert.Null(runtimes.Single(r => (string?)r!["id"] == "python")!["error"]);
    }

    [Fact]
    public async Task ARunWithoutASandboxIsA503ThatNamesNoEngineInternals()
    {
        var (response, problem) = await service.Runner("mia", "tenant-missing-image").RunAsync(new { language = "javascript", code = "console.log(1)" });

        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal("/problems/sandbox-unavailable", problem.Str("type"));
        Assert.Equal("The run was recorded but no sandbox could be created: the container engine is unavailable or could not start one. Retry shortly.",
            problem.Str("detail"));
        Assert.NotEmpty(problem.Str("runId"));
    }

    [Fact]
    public async Task AnUploadTheNodeCannotSpoolIsA503ThatNamesNoPath()
    {
        using var client = service.Runner("mia", "tenant-missing-image");
        using var form = new MultipartFormDataContent
        {
            { new StringContent("python"), "language" },
            { new StringContent("print(open('in.txt').read())"), "code" },
            { new StringContent("hello"), "in.txt", "in.txt" },
        };
        using var response = await client.PostAsync("/v1/runs", form);
        var problem = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;

        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal("/problems/sandbox-unavailable", (string?)problem["type"]);
        Assert.True(response.Headers.RetryAfter?.Delta is { TotalSeconds: >= 1 }, $"Retry-After: {response.Headers.RetryAfter}");
        Assert.DoesNotContain(Path.GetFileName(service.NotADirectory), (string?)problem["detail"]);
    }
}
