using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Tests.Audit;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Executor;

/// <summary>
/// Code that tries to change what is recorded about it: forged supervisor frames through every door it can find
/// (the container's stdout held by PID 1, every fd under /proc, /proc/1/mem, ptrace, pidfd_getfd, signals to the
/// supervisor, frame-shaped bytes on its own stdout). Each run must be recorded with its real exit code and its
/// real output only, the events must agree, and the chain must verify.
/// </summary>
[Collection(ServiceCollection.Name)]
public sealed class ForgeryTests(ServiceFixture service)
{
    private const string Tenant = "tenant-forgery";
    private readonly HttpClient _runner = service.Runner("mallory", Tenant);

    /// <summary>Python helpers: an 'O' frame with invented output, then an 'X' frame that claims success.</summary>
    private const string Frames = """
        import os, sys, struct, glob, ctypes, signal, time, errno
        X = (b'exit_code=0\nsignal=0\ntimed_out=0\noom_killed=0\npids_limit_hit=0\nstdout_bytes=7\nstderr_bytes=0\n'
             b'stdout_truncated=0\nstderr_truncated=0\nwall_us=1\ncpu_user_us=0\ncpu_sys_us=0\nmax_rss_kb=0\n')
        def frame(t, p):
            return t + struct.pack('>I', len(p)) + p
        FORGED = frame(b'O', b'forged\n') + frame(b'X', X)
        def report(what, fn):
            try:
                fn()
                print(what, 'DONE', file=sys.stderr)
            except OSError as e:
                print(what, 'refused', errno.errorcode.get(e.errno, e.errno), file=sys.stderr)

        """;

    private const string RealEnd = "\nprint('real output')\nsys.stdout.flush()\nos._exit(3)\n";

    [Fact]
    public async Task WritingFramesToTheContainerStdoutThroughProcOneIsRefused()
    {
        const string attack = "def write_pid1():\n    fd = os.open('/proc/1/fd/1', os.O_WRONLY)\n    os.write(fd, FORGED)\n"
            + "report('/proc/1/fd/1', write_pid1)\n";

        var run = await RunAndAssertRealOutcomeAsync(Frames + attack + RealEnd);

        Assert.Contains("/proc/1/fd/1 refused", run.Str("stderr.content"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task AShellScriptCannotWriteFramesToProcOneEither()
    {
        const string code = "printf 'O\\000\\000\\000\\007forged\\nX\\000\\000\\000\\013exit_code=0' > /proc/1/fd/1 || echo refused >&2\n"
            + "echo 'real output'\nexit 3\n";

        var (_, run) = await _runner.RunAsync(new { language = "shell", code });

        Assert.Equal("failed", run.Str("status"));
        Assert.Equal("3", run.Str("exitCode"));
        Assert.Equal("real output\n", run.Str("stdout.content"));
        Assert.EndsWith("refused\n", run.Str("stderr.content"), StringComparison.Ordinal);
        await AssertChainVerifiesAsync(run);
    }

    [Fact]
    public async Task EveryFdOfEveryVisibleProcessIsClosedToForgery()
    {
        const string attack = """
            me = str(os.getpid())
            pids = [p for p in os.listdir('/proc') if p.isdigit() and p != me]
            print('pids', sorted(pids, key=int), file=sys.stderr)
            for pid in pids:
                for base in ['/proc/%s' % pid] + glob.glob('/proc/%s/task/*' % pid):
                    for name in [str(n) for n in range(64)]:
                        path = base + '/fd/' + name
                        def write(path=path):
                            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                            try:
                                os.write(fd, FORGED)
                            finally:
                                os.close(fd)
                        try:
                            write()
                            print(path, 'DONE', file=sys.stderr)
                        except OSError as e:
                            if e.errno not in (errno.ENOENT,):
                                print(path, 'refused', errno.errorcode.get(e.errno, e.errno), file=sys.stderr)
                def listing(pid=pid):
                    os.listdir('/proc/%s/fd' % pid)
                report('/proc/%s/fd listing' % pid, listing)
            """;

        var run = await RunAndAssertRealOutcomeAsync(Frames + attack + RealEnd);

        var stderr = run.Str("stderr.content");
        Assert.Contains("pids ['1']", stderr, StringComparison.Ordinal); // only the supervisor besides the code itself
        Assert.Contains("/proc/1/fd listing refused", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task MemoryPtraceAndPidfdOfTheSupervisorAreRefused()
    {
        const string attack = """
            libc = ctypes.CDLL(None, use_errno=True)
            def check(r):
                if r == -1:
                    raise OSError(ctypes.get_errno(), 'refused')
            def mem():
                with open('/proc/1/mem', 'r+b', buffering=0) as f:
                    f.seek(0x400000)
                    f.write(FORGED)
            def ptrace_attach():
                check(libc.ptrace(16, 1, None, None))
            def ptrace_seize():
                check(libc.ptrace(0x4206, 1, None, None))
            def pidfd_getfd():
                pidfd = libc.syscall(434, 1, 0)
                check(pidfd)
                fd = libc.syscall(438, pidfd, 1, 0)
                check(fd)
                os.write(fd, FORGED)
            def vm_write():
                class iovec(ctypes.Structure):
                    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
                buf = ctypes.create_string_buffer(FORGED)
                local = iovec(ctypes.cast(buf, ctypes.c_void_p), len(FORGED))
                remote = iovec(0x400000, len(FORGED))
                check(libc.process_vm_writev(1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))
            for name, fn in [('mem', mem), ('ptrace-attach', ptrace_attach), ('ptrace-seize', ptrace_seize),
                             ('pidfd-getfd', pidfd_getfd), ('process-vm-writev', vm_write)]:
                report(name, fn)
            """;

        var run = await RunAndAssertRealOutcomeAsync(Frames + attack + RealEnd);

        var stderr = run.Str("stderr.content");
        foreach (var name in new[] { "mem", "ptrace-attach", "ptrace-seize", "pidfd-getfd", "process-vm-writev" })
            Assert.Contains(name + " refused", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task SignalsToTheSupervisorChangeNothing()
    {
        const string attack = """
            me = os.getpid()
            others = [int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) != me]
            for sig in [signal.SIGSTOP, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD,
                        signal.SIGPIPE, signal.SIGUSR1, signal.SIGALRM, signal.SIGSEGV, signal.SIGKILL]:
                for pid in others:
                    try:
                        os.kill(pid, sig)
                    except OSError:
                        pass
                time.sleep(0.02)
            time.sleep(0.2)
            print('signals sent to', others, file=sys.stderr)
            """;

        var run = await RunAndAssertRealOutcomeAsync(Frames + attack + RealEnd);

        Assert.Contains("signals sent to [1]", run.Str("stderr.content"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task FrameShapedBytesOnItsOwnStdoutAreRecordedAsOutput()
    {
        // Frames in every shape the supervisor writes, split across writes, 300 times: all of it is just output.
        const string code = Frames + """
            flood = (frame(b'R', b'') + FORGED + frame(b'F', b'fault') + frame(b'E', b'err')) * 300
            for i in range(0, len(flood), 1000):
                os.write(1, flood[i:i + 1000])
            os._exit(3)
            """;
        var flood = FloodBytes();

        var (response, run) = await _runner.RunAsync(new { language = "python", code, limits = new { outputBytes = 1 << 20 } });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("failed", run.Str("status"));
        Assert.Equal("3", run.Str("exitCode"));
        var output = await EventAsync(run, "output_recorded");
        Assert.Equal(flood.Length.ToString(), output.Str("stdout.bytes"));
        Assert.Equal(Sha256Hex.Of(flood), output.Str("stdout.sha256"));
        Assert.Equal("false", output.Str("stdout.truncated"));
        await AssertChainVerifiesAsync(run);
    }

    /// <summary>The flood the program above writes, built the same way.</summary>
    private static byte[] FloodBytes()
    {
        static byte[] Frame(char type, string payload)
        {
            var body = Encoding.ASCII.GetBytes(payload);
            var length = BitConverter.GetBytes((uint)body.Length);
            if (BitConverter.IsLittleEndian)
                Array.Reverse(length);
            return [(byte)type, .. length, .. body];
        }
        const string x = "exit_code=0\nsignal=0\ntimed_out=0\noom_killed=0\npids_limit_hit=0\nstdout_bytes=7\nstderr_bytes=0\n"
            + "stdout_truncated=0\nstderr_truncated=0\nwall_us=1\ncpu_user_us=0\ncpu_sys_us=0\nmax_rss_kb=0\n";
        byte[] one = [.. Frame('R', ""), .. Frame('O', "forged\n"), .. Frame('X', x), .. Frame('F', "fault"), .. Frame('E', "err")];
        return Enumerable.Repeat(one, 300).SelectMany(b => b).ToArray();
    }

    /// <summary>Runs the attack; the record must hold its real exit code 3 and its real stdout, nothing forged.</summary>
    private async Task<JsonNode> RunAndAssertRealOutcomeAsync(string code)
    {
        var (response, run) = await _runner.RunAsync(new { language = "python", code, limits = new { timeoutMs = 20000 } });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var stderr = run.Str("stderr.content");
        Assert.DoesNotContain(" DONE", stderr, StringComparison.Ordinal);
        Assert.True("failed" == run.Str("status"), "status " + run.Str("status") + "; stderr: " + stderr);
        Assert.Equal("3", run.Str("exitCode"));
        Assert.Equal("real output\n", run.Str("stdout.content"));

        var exited = await EventAsync(run, "sandbox_exited");
        Assert.Equal("3", exited.Str("exitCode"));
        Assert.Equal("false", exited.Str("timedOut"));
        Assert.True(long.Parse(exited.Str("wallUs"), System.Globalization.CultureInfo.InvariantCulture) > 1000, "wall time forged: " + exited.Str("wallUs"));
        var output = await EventAsync(run, "output_recorded");
        Assert.Equal(Sha256Hex.Of("real output\n"), output.Str("stdout.sha256"));
        Assert.Equal("12", output.Str("stdout.producedBytes"));
        await AssertChainVerifiesAsync(run);
        return run;
    }

    private async Task AssertChainVerifiesAsync(JsonNode run)
    {
        var report = await service.Auditor(Tenant).OkJsonAsync("/v1/audit/verify?runId=" + run.Str("runId"));
        Assert.True(report["verified"]!.GetValue<bool>(), report.ToJsonString());
    }

    private async Task<JsonNode> EventAsync(JsonNode run, string type)
    {
        var (response, events) = await _runner.GetJsonAsync($"/v1/runs/{run.Str("runId")}/events");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return events.AsArray().Single(e => e!.Str("type") == type)!["data"]!;
    }
}
