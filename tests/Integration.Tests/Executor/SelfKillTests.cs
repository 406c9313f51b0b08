using System.Net;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Executor;

/// <summary>
/// A SIGKILL is recorded as the memory limit's doing only when the memory cgroup's counter says so: a program that kills
/// itself far below its limit is a failure by signal 9, under both runtimes (gVisor has no counter inside the sandbox).
/// </summary>
[Collection(ServiceCollection.Name)]
public sealed class SelfKillTests(ServiceFixture service)
{
    [Theory]
    [InlineData("standard", "shell", "echo before; kill -9 $$")]
    [InlineData("strong", "shell", "echo before; kill -9 $$")]
    [InlineData("strong", "python", "import os, signal\nprint('before', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)")]
    [InlineData("strong", "javascript", "console.log('before'); process.kill(process.pid, 'SIGKILL')")]
    public async Task AProgramThatKillsItselfIsNotRecordedAsOverItsMemoryLimit(string isolation, string language, string code)
    {
        var (response, run) = await service.Runner("mallory", "tenant-self-kill").RunAsync(new { language, isolation, code });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("before\n", run.Str("stdout.content"));
        Assert.Equal("9", run.Str("signal"));
        Assert.True(run.Str("oomKilled") == "false", run.ToJsonString());
        Assert.Equal("failed", run.Str("status"));
    }

    /// <summary>
    /// The other side of the counter: a child the OOM killer takes is a true fact about the run even when the program goes on
    /// and exits 0; the record keeps both (exit code 0, oomKilled) and the limit that bit names the status, as for every limit.
    /// </summary>
    [Fact]
    public async Task AChildKilledByTheMemoryLimitMakesTheRunMemoryExceededAndKeepsTheProgramsExitCode()
    {
        const string code = "import subprocess, sys\n"
            + "hog = 'x = []\\nwhile True: x.append(bytearray(1 << 20))'\n"
            + "print('child', subprocess.run([sys.executable, '-c', hog]).returncode)";
        var (response, run) = await service.Runner("mallory", "tenant-self-kill").RunAsync(new
        {
            language = "python", isolation = "standard", code, limits = new { memoryMb = 96, timeoutMs = 20000 },
        });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.True(run.Str("stdout.content") == "child -9\n", run.ToJsonString());
        Assert.Equal("0", run.Str("exitCode"));
        Assert.Equal("true", run.Str("oomKilled"));
        Assert.Equal("memory_exceeded", run.Str("status"));
    }
}
