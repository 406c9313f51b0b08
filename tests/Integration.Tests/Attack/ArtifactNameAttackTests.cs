using System.Net;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Attack;

/// <summary>The service on a real Kestrel port: request targets reach it byte for byte.</summary>
public sealed class RawTargetFixture : ServiceFixture
{
    public string BaseUrl => Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();

    protected override void ConfigureFactory(WebApplicationFactory<Program> factory) =>
        factory.UseKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, 0));
}

[CollectionDefinition(Name)]
public sealed class RawTargetCollection : ICollectionFixture<RawTargetFixture>
{
    public const string Name = "attack2-raw-target";
}

/// <summary>
/// Attack on artifact names decoded once from the raw request target: traversal, double decoding, overlong and invalid
/// escapes, dot segments mixed with encoded slashes, another tenant's run. Nothing may answer 5xx or another artifact's bytes.
/// </summary>
[Collection(RawTargetCollection.Name)]
public sealed class ArtifactNameAttackTests(RawTargetFixture service)
{
    [Fact]
    public async Task CraftedTargetsFindOnlyTheArtifactTheyNameAndNeverFail()
    {
        var token = service.Token("alice", "tenant-attack2-names", Roles.Runner);
        using var client = new HttpClient { BaseAddress = new Uri(service.BaseUrl) };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        using var run = await client.PostAsync("/v1/runs", JsonContent(new
        {
            language = "shell",
            code = "mkdir -p out/a out/secret && printf nested > out/a/b.txt && printf top > out/b.txt && printf s > out/secret/k && printf dots > 'out/..b'",
        }));
        Assert.Equal(HttpStatusCode.OK, run.StatusCode);
        var id = (string)JsonNode.Parse(await run.Content.ReadAsStringAsync())!["runId"]!;
        var prefix = $"/v1/runs/{id}/artifacts/";

        // target → the body it may answer (null: not found, 400 or 404, never 5xx)
        var cases = new Dictionary<string, string?>
        {
            ["a%2Fb.txt"] = "nested",
            ["a%252Fb.txt"] = null, // a name holding "%2F": none
            ["a%25252Fb.txt"] = null,
            ["a/%2E%2E/b.txt"] = "top", // the server removes the dot segment before routing: b.txt
            ["a%2F%2E%2E%2Fb.txt"] = null, // one segment: the name "a/../b.txt", which is no artifact
            ["a%2F..%2Fb.txt"] = null,
            ["..%2Fb.txt"] = null,
            ["%2E%2Eb"] = "dots",
            ["a/..%2Fb.txt"] = null,
            ["secret%2F%2E%2E%2Fa%2Fb.txt"] = null,
            ["%2Fa%2Fb.txt"] = null,
            ["a%2F%2Fb.txt"] = null,
            ["a%5Cb.txt"] = null,
            ["a%C0%AFb.txt"] = null, // an overlong "/"
            ["a%ZZb.txt"] = null,
            ["a%2"] = null,
            ["%"] = null,
            ["a%00b.txt"] = null,
            ["a/b.txt%00"] = null,
            [new string('x', 6000)] = null,
            [string.Concat(Enumerable.Repeat("%2F", 2000))] = null,
        };
        var failures = new List<string>();
        foreach (var (name, body) in cases)
        {
            var answer = await RawHttp.GetAsync(service.BaseUrl, prefix + name, token);
            var status = int.Parse(answer.Split(' ', 3)[1], System.Globalization.CultureInfo.InvariantCulture);
            var content = answer[(answer.IndexOf("\r\n\r\n", StringComparison.Ordinal) + 4)..];
            if (status >= 500)
                failures.Add($"{name[..Math.Min(name.Length, 40)]}: {status}");
            else if (body is null && status == 200)
                failures.Add($"{name[..Math.Min(name.Length, 40)]}: 200 '{content}'");
            else if (body is not null && (status != 200 || content != body))
                failures.Add($"{name}: {status} '{content}' (expected '{body}')");
        }

        // Another tenant: the run is not found, whatever the name.
        var other = service.Token("eve", "tenant-attack2-other", Roles.Runner);
        foreach (var name in new[] { "a%2Fb.txt", "a/b.txt", "b.txt" })
        {
            var answer = await RawHttp.GetAsync(service.BaseUrl, prefix + name, other);
            if (!answer.StartsWith("HTTP/1.1 404", StringComparison.Ordinal))
                failures.Add($"other tenant {name}: {answer.Split("\r\n")[0]}");
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    private static StringContent JsonContent(object body) =>
        new(System.Text.Json.JsonSerializer.Serialize(body, ApiCalls.Json), System.Text.Encoding.UTF8, "application/json");
}
