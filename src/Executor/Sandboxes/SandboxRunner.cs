using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Executor.Docker;

namespace Sandbox.Audited.Executor.Sandboxes;

public enum OutputStream { Stdout, Stderr }

public readonly record struct OutputChunk(OutputStream Stream, ReadOnlyMemory<byte> Bytes);

/// <summary>What happened inside the sandbox: the supervisor's exit report (or what the engine saw) and the capped output.</summary>
public sealed record SandboxOutcome(
    ExitReport Exit,
    CapturedOutput Stdout,
    CapturedOutput Stderr,
    bool StdoutTruncated,
    bool StderrTruncated,
    string? Problem);

/// <summary>
/// Runs one request in one prepared sandbox: writes the request to the supervisor, collects framed output
/// up to the cap, and enforces a backstop deadline (timeout + grace) by killing the container should the
/// supervisor fail to stop the program itself.
/// </summary>
public sealed partial class SandboxRunner(DockerEngine docker, IOptions<ExecutorOptions> options, ILogger<SandboxRunner> logger)
{
    public async Task<SandboxOutcome> RunAsync(
        PreparedSandbox sandbox, ValidRunRequest request, RunLimits limits, Action<OutputChunk>? onOutput, CancellationToken ct)
    {
        var cap = limits.OutputBytes;
        var stdout = new CapturedOutput(cap);
        var stderr = new CapturedOutput(cap);
        using var backstop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        backstop.CancelAfter(limits.TimeoutMs + options.Value.BackstopGraceMs);

        try
        {
            var payload = SupervisorProtocol.EncodeRequest(request, limits.TimeoutMs, cap);
            await sandbox.Stream.WriteAsync(payload, 0, payload.Length, backstop.Token);
            sandbox.Stream.CloseWrite();

            while (await sandbox.Reader.NextAsync(backstop.Token) is { } frame)
            {
                switch (frame.Type)
                {
                    case SupervisorProtocol.Stdout:
                        Forward(stdout, OutputStream.Stdout, frame.Payload, onOutput);
                        break;
                    case SupervisorProtocol.Stderr:
                        Forward(stderr, OutputStream.Stderr, frame.Payload, onOutput);
                        break;
                    case SupervisorProtocol.Exit:
                        var exit = SupervisorProtocol.ParseExit(frame.Payload.Span);
                        return new SandboxOutcome(exit, stdout, stderr,
                            exit.StdoutTruncated || stdout.Truncated, exit.StderrTruncated || stderr.Truncated, null);
                    case SupervisorProtocol.Fault:
                        throw new SandboxException("Sandbox supervisor refused the request: " + System.Text.Encoding.UTF8.GetString(frame.Payload.Span));
                }
            }
            // The stream ended without an exit report: the supervisor died (OOM killer, or the program killed it).
            return await FromEngineAsync(sandbox, stdout, stderr, timedOut: false, "the sandbox supervisor ended without an exit report");
        }
        catch (OperationCanceledException) when (backstop.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            LogBackstop(sandbox.ContainerId, limits.TimeoutMs);
            await docker.KillAsync(sandbox.ContainerId, CancellationToken.None);
            return await FromEngineAsync(sandbox, stdout, stderr, timedOut: true, "the service killed the sandbox at the backstop deadline");
        }
    }

    private static void Forward(CapturedOutput buffer, OutputStream stream, ReadOnlyMemory<byte> bytes, Action<OutputChunk>? onOutput)
    {
        var kept = buffer.Append(bytes);
        if (kept > 0)
            onOutput?.Invoke(new OutputChunk(stream, bytes[..kept]));
    }

    private async Task<SandboxOutcome> FromEngineAsync(PreparedSandbox sandbox, CapturedOutput stdout, CapturedOutput stderr, bool timedOut, string problem)
    {
        int? exitCode = null;
        var oom = false;
        try
        {
            await docker.KillAsync(sandbox.ContainerId, CancellationToken.None);
            await docker.WaitAsync(sandbox.ContainerId, TimeSpan.FromSeconds(5), CancellationToken.None);
            var state = (await docker.InspectAsync(sandbox.ContainerId, CancellationToken.None)).State;
            exitCode = (int)state.ExitCode;
            oom = state.OOMKilled;
        }
        catch (Exception e)
        {
            LogInspectFailed(e, sandbox.ContainerId);
            // Neither the supervisor nor the engine can say how the program ended (the engine is away): an infrastructure
            // failure, never reported as the program's own failure.
            if (!timedOut)
                throw new SandboxException("The sandbox's stream ended without an exit report and the engine could not be asked how it ended: "
                    + e.GetBaseException().Message, e);
        }
        var exit = new ExitReport(
            ExitCode: timedOut ? null : exitCode, Signal: timedOut ? 9 : null, TimedOut: timedOut, OomKilled: oom, PidsLimitHit: false,
            StdoutProduced: stdout.Produced, StderrProduced: stderr.Produced, StdoutTruncated: stdout.Truncated, StderrTruncated: stderr.Truncated,
            WallUs: 0, CpuUserUs: 0, CpuSysUs: 0, MaxRssKb: null);
        return new SandboxOutcome(exit, stdout, stderr, stdout.Truncated, stderr.Truncated, problem);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Sandbox {ContainerId} passed its {TimeoutMs} ms timeout plus grace; killing it")]
    private partial void LogBackstop(string containerId, int timeoutMs);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not inspect sandbox {ContainerId} after its supervisor ended")]
    private partial void LogInspectFailed(Exception e, string containerId);
}

/// <summary>
/// A run's output of one stream: keeps at most cap bytes, counts everything offered. The frames' own arrays are kept (each
/// frame is a fresh array), and copied into one array only when the outcome is recorded: no doubling buffer while it runs.
/// </summary>
public sealed class CapturedOutput(int cap)
{
    private readonly List<ReadOnlyMemory<byte>> _chunks = [];
    private long _kept;

    public long Produced { get; private set; }

    public bool Truncated => Produced > _kept;

    /// <summary>The bytes kept.</summary>
    public long Length => _kept;

    public int Append(ReadOnlyMemory<byte> bytes)
    {
        Produced += bytes.Length;
        var kept = (int)Math.Min(Math.Max(0, cap - _kept), bytes.Length);
        if (kept > 0)
        {
            _chunks.Add(bytes[..kept]);
            _kept += kept;
        }
        return kept;
    }

    public byte[] ToArray()
    {
        var all = new byte[_kept];
        var at = 0;
        foreach (var chunk in _chunks)
        {
            chunk.Span.CopyTo(all.AsSpan(at));
            at += chunk.Length;
        }
        return all;
    }
}
