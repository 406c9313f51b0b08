using System.Net;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Executor;

/// <summary>A program that kills itself with SIGKILL, far below its memory limit: the record must not say the memory limit did it.</summary>
[Collection(ServiceCollection.Name)]
public sealed class SelfKillTests(ServiceFixture service)
{
    [Theory]
    [InlineData("standard", "shell", "echo before; kill -9 $$")]
    [InlineData("strong", "shell", "echo before; kill -9 $$")]
    [InlineData("strong", "python", "import os, signal\nprint('before', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)")]
    public async Task AProgramThatKillsItselfIsNotRecordedAsOverItsMemoryLimit(string isolation, string language, string code)
    {
        var (response, run) = await service.Runner("mallory", "tenant-self-kill").RunAsync(new { language, isolation, code });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("before\n", run.Str("stdout.content"));
        Assert.Equal("9", run.Str("signal"));
        Assert.True(run.Str("oomKilled") == "false", run.ToJsonString());
        Assert.Equal("failed", run.Str("status"));
    }
}
