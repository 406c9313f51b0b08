using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Executor.Docker;
using Sandbox.Audited.Executor.Pool;
using Sandbox.Audited.Executor.Sandboxes;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Executor;

/// <summary>
/// Programs written to break out or bring the service down, sent through the API. Each must end with its own
/// status and recorded facts, leave the service answering, and leave no container of the service behind.
/// </summary>
[Collection(ServiceCollection.Name)]
public sealed class HostileProgramTests(ServiceFixture service) : HostilePrograms(service, "standard");

/// <summary>The same programs once under gVisor (isolation class strong); where it reports a limit differently, the expectation says so.</summary>
[Collection(ServiceCollection.Name)]
public sealed class StrongHostileProgramTests(ServiceFixture service) : HostilePrograms(service, "strong");

public abstract class HostilePrograms(ServiceFixture service, string isolation)
{
    private readonly HttpClient _runner = service.Runner("mallory", "tenant-hostile");

    private bool Strong => isolation == "strong";

    private Task<(HttpResponseMessage Response, JsonNode Body)> RunAsync(object request)
    {
        var body = JsonSerializer.SerializeToNode(request, ApiCalls.Json)!.AsObject();
        body["isolation"] = isolation;
        return _runner.RunAsync(body);
    }

    [Theory]
    [InlineData("python", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")]
    [InlineData("shell", "b() { b | b & }; b; sleep 2")]
    public async Task ForkBombIsContainedAsPidsExhausted(string language, string code)
    {
        // Memory headroom (the runners' ceiling): under gVisor 32 forked interpreters can reach the default 128 MB before
        // the pids limit, and then the true record is memory_exceeded; this test is about the process limit.
        var (response, run) = await RunAsync(new { language, code, limits = new { pids = 32, timeoutMs = 3000, memoryMb = 256 } });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var exited = await EventAsync(run, "sandbox_exited");
        Assert.Equal("false", exited.Str("oomKilled"));
        if (Strong)
        {
            // gVisor has no process limit of its own: the bomb exhausts the host pids cgroup, where the sandbox kernel
            // cannot start another thread and stops; the whole sandbox ends without the supervisor's report.
            Assert.Equal("failed", run.Str("status"));
            Assert.Equal("the sandbox supervisor ended without an exit report", (await EventAsync(run, "run_completed")).Str("reason"));
        }
        else
        {
            Assert.Equal("pids_exhausted", run.Str("status"));
            Assert.Equal("true", exited.Str("pidsLimitHit"));
        }
        await AssertHealthyAndCleanAsync();
    }

    [Theory]
    [InlineData("python", "x = []\nwhile True: x.append(bytearray(1 << 20))")]
    [InlineData("javascript", "const a = []; for (;;) a.push(Buffer.alloc(1 << 20, 1))")]
    public async Task AllocationLoopIsKilledAsMemoryExceeded(string language, string code)
    {
        var (_, run) = await RunAsync(new { language, code, limits = new { memoryMb = 96, timeoutMs = 20000 } });
        var exited = await EventAsync(run, "sandbox_exited");
        if (Strong && run.Str("status") == "failed")
        {
            // Under gVisor the engine's state missed 7 of 150 OOM kills here (it handled the OOM after the exit); the
            // service then takes the reason from the engine's event log. Rarely (1 of 70 kills from the CLI, none of the 150)
            // the runtime removes the sandbox's cgroup before the engine hears of the OOM and neither record has it: only
            // then may the run end failed, exit 137, no reason. The record must agree with the engine's log.
            Assert.True((exited.Str("exitCode"), exited.Str("oomKilled"), exited.Str("timedOut"), exited.Str("pidsLimitHit")) == ("137", "false", "false", "false"),
                run.ToJsonString());
            var engine = (DockerEngine)service.Services.GetService(typeof(DockerEngine))!;
            Assert.False(await engine.OomEventLoggedAsync(run.Str("sandbox.containerId"), DateTimeOffset.UtcNow.AddMinutes(-1), DateTimeOffset.UtcNow,
                CancellationToken.None), "the engine logged an oom event the record does not have: " + run.ToJsonString());
            await AssertHealthyAndCleanAsync();
            return;
        }
        Assert.True(run.Str("status") == "memory_exceeded", run.ToJsonString());
        Assert.Equal("true", exited.Str("oomKilled"));
        Assert.Equal("false", exited.Str("timedOut"));
        // gVisor enforces memory on the whole sandbox: the container dies (137), not the program with SIGKILL inside it.
        Assert.Equal(Strong ? "" : "9", exited.Str("signal"));
        Assert.Equal(Strong ? "137" : "", exited.Str("exitCode"));
        await AssertHealthyAndCleanAsync();
    }

    [Fact]
    public async Task BusyLoopTimesOutKeepingItsOutputAndTheWholeTreeDies()
    {
        const string code = "import os\nif os.fork() == 0:\n    while True: pass\nprint('started', flush=True)\nwhile True: pass";
        var (_, run) = await RunAsync(new { language = "python", code, limits = new { timeoutMs = 1000 } });

        Assert.Equal("timed_out", run.Str("status"));
        Assert.Equal("started\n", run.Str("stdout.content"));
        var exited = await EventAsync(run, "sandbox_exited");
        Assert.Equal("true", exited.Str("timedOut"));
        Assert.Equal("9", exited.Str("signal"));
        Assert.Equal("false", exited.Str("oomKilled"));
        await AssertHealthyAndCleanAsync();
    }

    [Fact]
    public async Task HundredMegabytesOfOutputAreCutAtTheCapAndCounted()
    {
        const int cap = 65536;
        const string code = "import sys\nchunk = 'x' * 1048576\nfor _ in range(100): sys.stdout.write(chunk)\nsys.stderr.write('e' * 100000)";
        var (_, run) = await RunAsync(new { language = "python", code, limits = new { outputBytes = cap, timeoutMs = 30000 } });

        Assert.Equal("output_truncated", run.Str("status"));
        Assert.Equal("0", run.Str("exitCode"));
        var output = await EventAsync(run, "output_recorded");
        Assert.Equal(cap.ToString(), output.Str("stdout.bytes"));
        Assert.Equal((100L * 1048576).ToString(), output.Str("stdout.producedBytes"));
        Assert.Equal("true", output.Str("stdout.truncated"));
        Assert.Equal(Sha256Hex.Of(new string('x', cap)), output.Str("stdout.sha256"));
        Assert.Equal(cap.ToString(), output.Str("stderr.bytes"));
        Assert.Equal("100000", output.Str("stderr.producedBytes"));
        Assert.Equal("true", output.Str("stderr.truncated"));
        await AssertHealthyAndCleanAsync();
    }

    [Fact]
    public async Task FillingTmpGivesTheScriptEnospc()
    {
        const string code = "import errno\nblock = b'x' * 1048576\ntry:\n    with open('/tmp/work/fill', 'wb') as f:\n"
            + "        for _ in range(64):\n            f.write(block)\n            f.flush()\n    print('not full')\n"
            + "except OSError as e:\n    print('full', errno.errorcode[e.errno])";
        var (_, run) = await RunAsync(new { language = "python", code, limits = new { tmpfsMb = 8 } });

        Assert.Equal("succeeded", run.Str("status"));
        Assert.Equal("full ENOSPC", run.Str("stdout.content").Trim());
        await AssertHealthyAndCleanAsync();
    }

    [Fact]
    public async Task SharedMemoryIsSmallAndMessageQueuesAreClosed()
    {
        const string code = "import errno, ctypes\nblock = b'x' * 65536\nwritten = 0\ntry:\n"
            + "    with open('/dev/shm/fill', 'wb') as f:\n        for _ in range(64):\n            f.write(block)\n            f.flush()\n"
            + "            written += len(block)\nexcept OSError as e:\n    print('shm', errno.errorcode[e.errno], written // 1024)\n"
            + "rt = ctypes.CDLL(None, use_errno=True)\nq = rt.mq_open(b'/sbx', 0o102, 0o600, None)\n"
            + "print('mq', 'opened' if q >= 0 else errno.errorcode[ctypes.get_errno()])";
        var (_, run) = await _runner.RunAsync(new { language = "python", code, limits = new { tmpfsMb = 64 } });

        Assert.Equal("succeeded", run.Str("status"));
        var lines = run.Str("stdout.content").Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal($"shm ENOSPC {ContainerSpec.ShmMb * 1024}", lines[0]);
        Assert.StartsWith("mq E", lines[1], StringComparison.Ordinal);
        var settings = (await EventAsync(run, "sandbox_created"))["settings"]!;
        Assert.Equal("/tmp:rw,nosuid,nodev,noexec,size=64m,mode=1777 /dev/shm:rw,nosuid,nodev,noexec,size=1m,mode=1777", settings.Str("tmpfs"));
        Assert.Contains("msgqueue=0:0", settings["ulimits"]!.AsArray().Select(u => u!.ToString()));
        Assert.Equal("false", settings.Str("init"));
        await AssertHealthyAndCleanAsync();
    }

    [Fact]
    public async Task WritingToTheRootFilesystemFails()
    {
        const string code = "import errno\nfor d in ['', '/etc', '/usr/bin', '/var', '/home', '/root', '/sys/fs']:\n    try:\n"
            + "        open(d + '/evil', 'w').write('x')\n        print(d or '/', 'WROTE')\n"
            + "    except OSError as e:\n        print(d or '/', errno.errorcode[e.errno])";
        var (_, run) = await RunAsync(new { language = "python", code });

        var lines = run.Str("stdout.content").Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(7, lines.Length);
        Assert.DoesNotContain(lines, l => l.EndsWith("WROTE", StringComparison.Ordinal));
        // gVisor checks the permission before the read-only mount: uid 65534 gets EACCES where runc says EROFS.
        Assert.Contains(Strong ? "/ EACCES" : "/ EROFS", lines);
        Assert.Contains(Strong ? "/usr/bin EACCES" : "/usr/bin EROFS", lines);
        await AssertHealthyAndCleanAsync();
    }

    [Fact]
    public async Task HostSecretsAreNotVisibleInside()
    {
        // The service runs in this process: a canary in its environment stands for any host secret.
        var canary = "canary-" + Guid.NewGuid().ToString("N");
        Environment.SetEnvironmentVariable("SBX_TEST_HOST_SECRET", canary);
        try
        {
            const string code = "import os, glob\nprint('ENV', ' '.join(sorted(os.environ)))\nprint(os.environ)\n"
                + "for p in ['/proc/1/environ'] + glob.glob('/proc/[0-9]*/environ'):\n    try:\n        print(p, open(p, 'rb').read())\n"
                + "    except OSError as e:\n        print(p, 'unreadable', e.errno)";
            var (_, run) = await RunAsync(new { language = "python", code });

            Assert.Equal("succeeded", run.Str("status"));
            var stdout = run.Str("stdout.content");
            // The supervisor (PID 1) is not dumpable; gVisor does not apply that to /proc/1/environ, which holds only the clean environment.
            var pid1 = Strong ? "/proc/1/environ b'" : "/proc/1/environ unreadable 13";
            Assert.True(stdout.Contains(pid1, StringComparison.Ordinal), $"expected '{pid1}' in: {stdout}");
            Assert.Contains("/environ b'", stdout); // its own environment was read, and holds no secret
            Assert.DoesNotContain(canary, stdout);
            Assert.DoesNotContain("SBX_TEST_HOST_SECRET", stdout);
            Assert.DoesNotContain(TestEnvironment.AppPassword, stdout);
            Assert.DoesNotContain("ConnectionStrings", stdout);
            Assert.Equal("ENV HOME LANG PATH PYTHONDONTWRITEBYTECODE PYTHONUNBUFFERED", stdout.Split('\n')[0]);
        }
        finally
        {
            Environment.SetEnvironmentVariable("SBX_TEST_HOST_SECRET", null);
        }
        await AssertHealthyAndCleanAsync();
    }

    [Fact]
    public async Task DaemonizedChildDiesWithTheSandbox()
    {
        const string code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(120)\n"
            + "    os._exit(0)\nprint('parent done')";
        var (_, run) = await RunAsync(new { language = "python", code, limits = new { timeoutMs = 30000 } });

        Assert.Equal("succeeded", run.Str("status"));
        Assert.Equal("parent done\n", run.Str("stdout.content"));
        Assert.InRange(double.Parse(run.Str("wallMs"), System.Globalization.CultureInfo.InvariantCulture), 0, 5000);
        await AssertHealthyAndCleanAsync();
    }

    [Fact]
    public async Task ScriptThatClosesStdoutAndSleepsTimesOut()
    {
        var (_, run) = await RunAsync(new
        {
            language = "python", code = "import os, time\nprint('bye', flush=True)\nos.close(1)\nos.close(2)\ntime.sleep(60)",
            limits = new { timeoutMs = 1000 },
        });

        Assert.Equal("timed_out", run.Str("status"));
        Assert.Equal("bye\n", run.Str("stdout.content"));
        var exited = await EventAsync(run, "sandbox_exited");
        Assert.Equal("true", exited.Str("timedOut"));
        Assert.Equal("9", exited.Str("signal"));
        await AssertHealthyAndCleanAsync();
    }

    [Fact]
    public async Task SetuidAndCapabilityTricksFail()
    {
        const string code = """
            try() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "$name:ok"; else echo "$name:fail"; fi; }
            try su su -c 'id -u' root
            try unshare unshare -r id
            try unshare-mount unshare -m true
            mkdir -p /tmp/work/m
            try mount mount -t tmpfs none /tmp/work/m
            try setpriv setpriv --reuid=0 id -u
            cp /bin/sh /tmp/work/sh && chmod u+s /tmp/work/sh
            try exec-setuid-copy /tmp/work/sh -c true
            try chown chown 0 /tmp/work/sh
            id -u
            """;
        var (_, shell) = await RunAsync(new { language = "shell", code });
        const string python = "import os, socket, ctypes\ndef attempt(name, fn):\n    try:\n        fn()\n        print(name + ':ok')\n"
            + "    except OSError:\n        print(name + ':fail')\nattempt('setuid', lambda: os.setuid(0))\nattempt('setgid', lambda: os.setgid(0))\n"
            + "attempt('raw-socket', lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))\n"
            + "attempt('packet-socket', lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))\n"
            + "libc = ctypes.CDLL(None, use_errno=True)\n"
            + "def unshare_user():\n    if libc.unshare(0x10000000) != 0:\n        raise OSError(ctypes.get_errno(), 'unshare')\n"
            + "attempt('unshare-user', unshare_user)\nprint(os.getuid(), os.geteuid())";
        var (_, py) = await RunAsync(new { language = "python", code = python });

        var shellLines = shell.Str("stdout.content").Split('\n', StringSplitOptions.RemoveEmptyEntries);
        // gVisor lets a process make a user namespace inside its own kernel: "root" there holds nothing on the host.
        var userNamespace = Strong ? "ok" : "fail";
        Assert.Equal(["su:fail", $"unshare:{userNamespace}", "unshare-mount:fail", "mount:fail", "setpriv:fail", "exec-setuid-copy:fail", "chown:fail", "65534"], shellLines);
        var pyLines = py.Str("stdout.content").Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(["setuid:fail", "setgid:fail", "raw-socket:fail", "packet-socket:fail", $"unshare-user:{userNamespace}", "65534 65534"], pyLines);
        await AssertHealthyAndCleanAsync();
    }

    private async Task<JsonNode> EventAsync(JsonNode run, string type)
    {
        var (response, events) = await _runner.GetJsonAsync($"/v1/runs/{run.Str("runId")}/events");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return events.AsArray().Single(e => e!.Str("type") == type)!["data"]!;
    }

    /// <summary>The service still runs a normal program, and only the warm pool's fresh sandboxes remain.</summary>
    private async Task AssertHealthyAndCleanAsync()
    {
        var (response, run) = await _runner.RunAsync(new { language = "shell", code = "echo still-here" });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("still-here\n", run.Str("stdout.content"));

        var pool = (SandboxPool)service.Services.GetService(typeof(SandboxPool))!;
        var left = await Containers.LeftoversAsync(service.NodeId, c => pool.IsWarm(c.ID));
        Assert.True(left.Count == 0, "Containers left behind: " + Containers.Describe(left));
    }
}
