using System.Net;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Sandbox.Audited.Tests.Runs;

// Alone, after the parallel collections: the service's memory is measured on the test process's heap, which other
// collections' services would otherwise grow at the same time.
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class InputMemoryCollection : ICollectionFixture<ArtifactFixture>
{
    public const string Name = "input-memory";
}

[Collection(InputMemoryCollection.Name)]
public sealed class InputMemoryTests(ArtifactFixture service, ITestOutputHelper output)
{
    private const string Tenant = "tenant-input-memory";

    [Fact]
    public async Task ATwentyMegabyteInputDoesNotRaiseTheServiceMemoryByItsSize()
    {
        const int size = 20 * 1024 * 1024;
        await service.Runner("ada", Tenant).RunAsync(new { language = "python", code = "print(1)" }); // warm up code paths
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var baseline = GC.GetTotalMemory(true);
        long peak = baseline;
        using var sampling = new CancellationTokenSource();
        var sampler = Task.Run(async () =>
        {
            while (!sampling.IsCancellationRequested)
            {
                // Live bytes after a full collection: what the service holds, not the garbage its buffers leave.
                peak = Math.Max(peak, GC.GetTotalMemory(true));
                await Task.Delay(10);
            }
        });
        using var form = new MultipartFormDataContent
        {
            { new StringContent("python"), "language" },
            { new StringContent("import os\nprint(os.path.getsize('big.bin'))"), "code" },
            { new StringContent("""{"tmpfsMb": 64}"""), "limits" },
            { new StreamContent(new GeneratedStream(size)), "big.bin", "big.bin" },
        };
        using var client = service.StreamingClient(service.Token("ada", Tenant, Roles.Runner));
        var response = await client.PostAsync("/v1/runs", form);
        await sampling.CancelAsync();
        await sampler;
        var body = await ApiCalls.BodyAsync(response);
        var raised = peak - baseline;
        output.WriteLine($"managed heap raised by {raised / 1024 / 1024.0:F1} MiB for a {size / 1024 / 1024} MiB input");
        Assert.True(response.StatusCode == HttpStatusCode.OK, body.ToJsonString());
        Assert.Equal($"{size}\n", body.Str("stdout.content"));
        Assert.True(raised < 8 * 1024 * 1024, $"the managed heap grew by {raised} bytes for a {size}-byte input");
    }
}
