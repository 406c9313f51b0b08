using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Tests.Contract;

/// <summary>The served OpenAPI document, checked by Redocly's linter and by a client generated from it.</summary>
[Collection(ContractCollection.Name)]
public sealed class OpenApiContractTests(ContractFixture service)
{
    [Fact]
    public async Task RedoclyFindsNoErrorInTheServedDocument()
    {
        var output = await service.RunAsync("npx", ["--no-install", "redocly", "lint", $"{service.BaseUrl}/openapi/v1.json", "--format=stylish"]);

        Assert.Contains("valid", output, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task GeneratedTypeScriptClientRunsStreamsReadsEventsAndGetsATypedProblem()
    {
        await service.RunAsync("npx", ["--no-install", "openapi-typescript", $"{service.BaseUrl}/openapi/v1.json", "-o", "generated/schema.d.ts"]);
        await service.RunAsync("npx", ["--no-install", "tsc", "-p", "tsconfig.json", "--strict"]);

        var output = await service.RunAsync("node", ["out/client.js"], new Dictionary<string, string>
        {
            ["SBX_RUNNER_TOKEN"] = service.Token("cleo", "tenant-contract", Roles.Runner),
        });

        Assert.Contains("1 passed, 0 failed", output);
    }
}
