using System.Net;
using System.Text.Json.Nodes;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Runtimes;

/// <summary>Runtimes from the catalogue, recorded by image, layer and SBOM digest; isolation classes chosen by policy.</summary>
[Collection(ServiceCollection.Name)]
public sealed class RuntimeTests(ServiceFixture service)
{
    private const string Tenant = "tenant-runtimes";

    private readonly HttpClient _runner = service.Runner("ruth", Tenant);

    [Fact]
    public async Task PandasReadsACsvInPythonDataAndTheRecordNamesItsPackages()
    {
        var (response, run) = await _runner.RunAsync(new
        {
            language = "python",
            runtime = "python-data",
            code = "import sys\nimport pandas as pd\ntable = pd.read_csv(sys.stdin)\nprint(pd.__version__, int(table['amount'].sum()))",
            stdin = "name,amount\nrent,1200\nfood,345\n",
        });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("succeeded", run.Str("status"));
        var (pandasVersion, total) = (run.Str("stdout.content").Split(' ')[0], run.Str("stdout.content").Split(' ')[1].Trim());
        Assert.Equal("1545", total);

        var events = await EventsAsync(run.Str("runId"));
        Assert.Equal("python-data", Data(events, "run_requested").Str("runtime"));
        Assert.Equal("python-data", Data(events, "policy_evaluated").Str("runtime"));
        var created = Data(events, "sandbox_created");
        Assert.Equal("python-data", created.Str("runtimeId"));
        Assert.Equal("standard", created.Str("isolation"));
        Assert.StartsWith("sha256:", created.Str("imageId"));
        Assert.StartsWith("sha256:", created.Str("layerDigest"));
        var sbomDigest = created.Str("sbomDigest");
        Assert.StartsWith("sha256:", sbomDigest);

        // The auditor's question, answered from the record alone: the SBOM the run's event names lists pandas.
        var auditor = service.Client(service.Token("rhea", Tenant, "auditor"));
        var sbom = await auditor.GetStringAsync($"/v1/runtimes/sboms/{sbomDigest}");
        Assert.Equal(sbomDigest, "sha256:" + Sandbox.Audited.Domain.Hashing.Sha256Hex.Of(sbom));
        var document = JsonNode.Parse(sbom)!;
        Assert.Equal("SPDX-2.3", document.Str("spdxVersion"));
        var pandas = document["packages"]!.AsArray().Single(p => p!.Str("name") == "python3-pandas")!;
        Assert.StartsWith(pandasVersion + "+", pandas.Str("versionInfo"));
        Assert.StartsWith($"pkg:deb/debian/python3-pandas@", pandas["externalRefs"]![0]!.Str("referenceLocator"));

        // The catalogue lists the same image and SBOM, and the current SBOM downloads by runtime id.
        var (_, list) = await auditor.GetJsonAsync("/v1/runtimes");
        var listed = list.AsArray().Single(r => r!.Str("id") == "python-data")!;
        Assert.Equal(created.Str("imageId"), listed.Str("imageId"));
        Assert.Equal(sbomDigest, listed.Str("sbomDigest"));
        Assert.Equal("/v1/runtimes/python-data/sbom", listed.Str("sbom"));
        var current = await auditor.GetAsync("/v1/runtimes/python-data/sbom");
        Assert.Equal("application/spdx+json", current.Content.Headers.ContentType?.MediaType);
        Assert.Equal(sbom, await current.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task ARestrictedRunByAReviewerIsForcedIntoGVisorByPolicy()
    {
        var reviewer = service.Client(service.Token("rex", Tenant, "runner", "reviewer"));
        var (response, run) = await reviewer.RunAsync(new
        {
            language = "python", classification = "restricted", isolation = "standard",
            code = "import platform\nprint(platform.release())",
        });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("succeeded", run.Str("status"));
        var events = await EventsAsync(run.Str("runId"), reviewer);
        Assert.Equal("standard", Data(events, "run_requested").Str("isolation"));
        var decision = Data(events, "policy_evaluated");
        Assert.Equal("strong", decision.Str("isolation"));
        Assert.Contains(decision["reasons"]!.AsArray(), r => r!.ToString() == "isolation standard requested, raised to strong by rule restricted-reviewers-strong");
        var created = Data(events, "sandbox_created");
        Assert.Equal("strong", created.Str("isolation"));
        Assert.Equal("runsc", created.Str("settings.runtime"));
        // gVisor's own kernel answers, not the host's.
        Assert.Equal("4.4.0\n", run.Str("stdout.content"));
    }

    [Fact]
    public async Task ARunnerMayAskForStrongIsolation()
    {
        var (_, run) = await _runner.RunAsync(new { language = "shell", isolation = "strong", code = "echo hi" });

        Assert.Equal("succeeded", run.Str("status"));
        var created = Data(await EventsAsync(run.Str("runId")), "sandbox_created");
        Assert.Equal("runsc", created.Str("settings.runtime"));
        Assert.Equal("shell", created.Str("runtimeId"));
    }

    [Fact]
    public async Task AReproductionRunsOnTheRuntimeAndIsolationOfTheOriginalAndRecordsThem()
    {
        // python-data under gVisor: reproduced, it must not fall back to the language's default runtime or to runc.
        var (_, run) = await _runner.RunAsync(new { language = "python", runtime = "python-data", isolation = "strong", code = "import pandas, platform\nprint(platform.release())" });
        Assert.Equal("succeeded", run.Str("status"));

        var response = await _runner.PostAsync($"/v1/runs/{run.Str("runId")}/reproduce", null);
        var body = await ApiCalls.BodyAsync(response);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.True(body["comparison"]!["identical"]!.GetValue<bool>(), body.ToJsonString());
        var events = await EventsAsync(body.Str("runId"));
        Assert.Equal(("python-data", "strong"), (Data(events, "run_requested").Str("runtime"), Data(events, "run_requested").Str("isolation")));
        var created = Data(events, "sandbox_created");
        Assert.Equal(("python-data", "strong", "runsc"), (created.Str("runtimeId"), created.Str("isolation"), created.Str("settings.runtime")));
    }

    [Fact]
    public async Task AnUnknownRuntimeIsRefusedWithTheChoices()
    {
        var (response, body) = await _runner.RunAsync(new { language = "python", runtime = "python-ml", code = "print(1)" });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("Unknown runtime 'python-ml': use one of javascript, python, python-data, shell.", body.Str("detail"));
    }

    [Fact]
    public async Task ARuntimeOfAnotherLanguageIsRefused()
    {
        var (response, body) = await _runner.RunAsync(new { language = "javascript", runtime = "python-data", code = "console.log(1)" });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("Runtime 'python-data' runs python, not javascript; for javascript use one of: javascript.", body.Str("detail"));
    }

    [Fact]
    public async Task AnUnknownIsolationClassIsRefused()
    {
        var (response, body) = await _runner.RunAsync(new { language = "python", isolation = "weak", code = "print(1)" });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("Unknown isolation 'weak': use one of standard, strong.", body.Str("detail"));
    }

    private static JsonNode Data(IReadOnlyList<JsonNode> events, string type) =>
        events.Single(e => e.Str("type") == type)["data"]!;

    private async Task<IReadOnlyList<JsonNode>> EventsAsync(string runId, HttpClient? client = null)
    {
        var (response, body) = await (client ?? _runner).GetJsonAsync($"/v1/runs/{runId}/events");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return body.AsArray().Select(e => e!).ToList();
    }
}
