using System.Globalization;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Domain.Sandboxes;
using Sandbox.Audited.Executor.Docker;

namespace Sandbox.Audited.Executor.Sandboxes;

public enum OutputStream { Stdout, Stderr }

/// <summary>Output as it arrives; Bytes is a view of the frame reader's buffer, valid only during the callback.</summary>
public readonly record struct OutputChunk(OutputStream Stream, ReadOnlyMemory<byte> Bytes);

/// <summary>What happened inside the sandbox: the supervisor's exit report (or what the engine saw) and the capped output.</summary>
public sealed record SandboxOutcome(
    ExitReport Exit,
    CapturedOutput Stdout,
    CapturedOutput Stderr,
    bool StdoutTruncated,
    bool StderrTruncated,
    string? Problem,
    IReadOnlyList<CollectedArtifact> Artifacts)
{
    /// <summary>Deletes the spooled output and artifact files and gives the output's memory back (after they were stored, or when the run failed).</summary>
    public void DeleteSpool()
    {
        Stdout.Dispose();
        Stderr.Dispose();
        foreach (var a in Artifacts)
            if (a.Path is { } path)
                File.Delete(path);
    }
}

/// <summary>
/// Runs one request in one prepared sandbox: writes the request to the supervisor, collects framed output
/// up to the cap, and enforces a backstop deadline (timeout + grace) by killing the container should the
/// supervisor fail to stop the program itself.
/// </summary>
public sealed partial class SandboxRunner(DockerEngine docker, IOptions<ExecutorOptions> options, ILogger<SandboxRunner> logger)
{
    private readonly OutputBudget _outputBudget = new(options.Value.MaxBufferedOutputBytes);

    /// <summary>Output memory not taken by runs in flight (Executor:MaxBufferedOutputBytes less what they hold).</summary>
    public long OutputBudgetFree => _outputBudget.Free;

    public async Task<SandboxOutcome> RunAsync(
        PreparedSandbox sandbox, ValidRunRequest request, RunLimits limits, Action<OutputChunk>? onOutput, CancellationToken ct)
    {
        var cap = limits.OutputBytes;
        var o = options.Value;
        var stdout = new CapturedOutput(cap, _outputBudget, o.SpoolDirectory);
        var stderr = new CapturedOutput(cap, _outputBudget, o.SpoolDirectory);
        var caps = new ArtifactCaps(o.MaxArtifacts, o.MaxArtifactBytes, o.MaxArtifactsTotalBytes);
        var artifacts = new ArtifactSpool(o.SpoolDirectory);
        using var backstop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        // Moving inputs in and artifacts out takes time too: allowed at a slow 8 MiB/s on top of the run's own timeout.
        var transferMs = (request.InputBytes + caps.MaxTotalBytes) / (8 * 1024 * 1024 / 1000);
        backstop.CancelAfter(TimeSpan.FromMilliseconds(limits.TimeoutMs + o.BackstopGraceMs + transferMs));

        try
        {
            await SupervisorProtocol.WriteRequestAsync((buffer, count, token) => sandbox.Stream.WriteAsync(buffer, 0, count, token),
                request, limits.TimeoutMs, cap, caps, backstop.Token);
            sandbox.Stream.CloseWrite();

            while (await sandbox.Reader.NextAsync(backstop.Token) is { } frame)
            {
                switch (frame.Type)
                {
                    case SupervisorProtocol.Stdout:
                        await ForwardAsync(stdout, OutputStream.Stdout, frame.Payload, onOutput, backstop.Token);
                        break;
                    case SupervisorProtocol.Stderr:
                        await ForwardAsync(stderr, OutputStream.Stderr, frame.Payload, onOutput, backstop.Token);
                        break;
                    case SupervisorProtocol.ArtifactStart:
                        artifacts.Start(frame.Payload.Span);
                        break;
                    case SupervisorProtocol.ArtifactData:
                        await artifacts.WriteAsync(frame.Payload, backstop.Token);
                        break;
                    case SupervisorProtocol.ArtifactEnd:
                        await artifacts.EndAsync(frame.Payload);
                        break;
                    case SupervisorProtocol.ArtifactSkipped:
                        artifacts.Skip(frame.Payload.Span);
                        break;
                    case SupervisorProtocol.Exit:
                        var exit = SupervisorProtocol.ParseExit(frame.Payload.Span);
                        return new SandboxOutcome(exit, stdout, stderr,
                            exit.StdoutTruncated || stdout.Truncated, exit.StderrTruncated || stderr.Truncated, null, artifacts.Complete());
                    case SupervisorProtocol.Fault:
                        throw new SandboxException("Sandbox supervisor refused the request: " + System.Text.Encoding.UTF8.GetString(frame.Payload.Span));
                }
            }
            // The stream ended without an exit report: the supervisor died (OOM killer, or the program killed it).
            artifacts.Discard();
            return await FromEngineAsync(sandbox, stdout, stderr, timedOut: false, "the sandbox supervisor ended without an exit report");
        }
        catch (OperationCanceledException) when (backstop.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            artifacts.Discard();
            LogBackstop(sandbox.ContainerId, limits.TimeoutMs);
            await docker.KillAsync(sandbox.ContainerId, CancellationToken.None);
            return await FromEngineAsync(sandbox, stdout, stderr, timedOut: true, "the service killed the sandbox at the backstop deadline");
        }
        catch
        {
            artifacts.Discard();
            stdout.Dispose();
            stderr.Dispose();
            throw;
        }
    }

    private static async ValueTask ForwardAsync(CapturedOutput buffer, OutputStream stream, ReadOnlyMemory<byte> bytes, Action<OutputChunk>? onOutput,
        CancellationToken ct)
    {
        var kept = await buffer.AppendAsync(bytes, ct);
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
            if (SandboxKill.AsksEventLog(exitCode, oom))
                oom = SandboxKill.OomKilled(oom, await OomEventLoggedAsync(sandbox.ContainerId, state));
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
        return new SandboxOutcome(exit, stdout, stderr, stdout.Truncated, stderr.Truncated, problem, []);
    }

    /// <summary>
    /// The engine's event log for the sandbox's life, read up to OomEventGraceMs past its end (engine clock): an OOM kill the
    /// engine handled after the exit is logged there a few milliseconds late. Null when the log could not be read.
    /// </summary>
    private async Task<bool?> OomEventLoggedAsync(string containerId, global::Docker.DotNet.Models.ContainerState state)
    {
        try
        {
            // RFC 3339 with nanoseconds, as the engine writes them.
            var started = DateTimeOffset.Parse(state.StartedAt, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal);
            var finished = DateTimeOffset.Parse(state.FinishedAt, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal);
            var logged = await docker.OomEventLoggedAsync(containerId, started, finished.AddMilliseconds(options.Value.OomEventGraceMs),
                CancellationToken.None);
            LogOomEventLog(containerId, logged);
            return logged;
        }
        catch (Exception e)
        {
            LogOomEventLogFailed(e, containerId);
            return null;
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Sandbox {ContainerId} was killed and its state gives no OOM kill; the engine's event log has one: {Logged}")]
    private partial void LogOomEventLog(string containerId, bool logged);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not read the engine's event log for sandbox {ContainerId}; its OOM kill, if any, stays unrecorded")]
    private partial void LogOomEventLogFailed(Exception e, string containerId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Sandbox {ContainerId} passed its {TimeoutMs} ms timeout plus grace; killing it")]
    private partial void LogBackstop(string containerId, int timeoutMs);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not inspect sandbox {ContainerId} after its supervisor ended")]
    private partial void LogInspectFailed(Exception e, string containerId);
}

/// <summary>
/// Receives the supervisor's artifact frames: each file goes to its own spool file and is hashed as it arrives, so the
/// service never holds one whole. A file whose end frame does not match its announced size is kept as "incomplete".
/// </summary>
internal sealed class ArtifactSpool(string directory)
{
    private readonly List<CollectedArtifact> _done = [];
    private FileStream? _file;
    private IncrementalHash? _hash;
    private string _name = "";
    private long _size, _received;

    public void Start(ReadOnlySpan<byte> payload)
    {
        if (_file is not null)
            throw new InvalidDataException("Supervisor started an artifact before ending the previous one.");
        (_size, _name) = SupervisorProtocol.ParseArtifactStart(payload);
        Directory.CreateDirectory(directory);
        _file = new FileStream(Path.Combine(directory, Guid.NewGuid().ToString("N")), FileMode.CreateNew, FileAccess.Write, FileShare.None, 0,
            FileOptions.Asynchronous);
        _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        _received = 0;
    }

    public async Task WriteAsync(ReadOnlyMemory<byte> bytes, CancellationToken ct)
    {
        if (_file is null || _received + bytes.Length > _size)
            throw new InvalidDataException("Supervisor sent artifact data outside an artifact or beyond its announced size.");
        _hash!.AppendData(bytes.Span);
        await _file.WriteAsync(bytes, ct);
        _received += bytes.Length;
    }

    public async Task EndAsync(ReadOnlyMemory<byte> payload)
    {
        if (_file is null)
            throw new InvalidDataException("Supervisor ended an artifact it never started.");
        var sent = SupervisorProtocol.ParseArtifactEnd(payload.Span);
        var path = _file.Name;
        await _file.DisposeAsync();
        _file = null;
        var sha = Convert.ToHexStringLower(_hash!.GetHashAndReset());
        _hash.Dispose();
        if (sent != _received || _received != _size)
        {
            File.Delete(path);
            _done.Add(new CollectedArtifact(_name, _received, null, null, "incomplete"));
            return;
        }
        _done.Add(new CollectedArtifact(_name, _received, sha, path, null));
    }

    public void Skip(ReadOnlySpan<byte> payload)
    {
        var (reason, name) = SupervisorProtocol.ParseSkipped(payload);
        _done.Add(new CollectedArtifact(name, 0, null, null, reason));
    }

    public IReadOnlyList<CollectedArtifact> Complete()
    {
        if (_file is not null)
            throw new InvalidDataException("Supervisor reported its exit in the middle of an artifact.");
        return _done;
    }

    /// <summary>The run ended without a report: nothing it sent is kept.</summary>
    public void Discard()
    {
        _file?.Dispose();
        if (_file is not null)
            File.Delete(_file.Name);
        _file = null;
        _hash?.Dispose();
        foreach (var a in _done)
            if (a.Path is { } path)
                File.Delete(path);
        _done.Clear();
    }
}
