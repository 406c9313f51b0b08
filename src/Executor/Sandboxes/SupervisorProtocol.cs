using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Executor.Sandboxes;

/// <summary>
/// The wire protocol of sbx-supervisor (src/Executor/Runtimes/supervisor). Request on the container's
/// stdin: "SBX1", u32 timeoutMs, u32 outputCap, u32 argc + (u32 len, bytes)*, u32 filec + (u32 len, name,
/// u32 len, content)*, u32 len + code, u32 len + stdin (all big-endian). Replies on stdout as frames:
/// u8 type, u32 length, payload — 'R' ready, 'O' stdout, 'E' stderr, 'X' exit report, 'F' fault.
/// </summary>
public static class SupervisorProtocol
{
    public const byte Ready = (byte)'R';
    public const byte Stdout = (byte)'O';
    public const byte Stderr = (byte)'E';
    public const byte Exit = (byte)'X';
    public const byte Fault = (byte)'F';

    public static byte[] EncodeRequest(ValidRunRequest request, int timeoutMs, int outputCap)
    {
        using var buffer = new MemoryStream();
        buffer.Write("SBX1"u8);
        WriteU32(buffer, (uint)timeoutMs);
        WriteU32(buffer, (uint)outputCap);
        WriteU32(buffer, (uint)request.Args.Count);
        foreach (var arg in request.Args)
            WriteBytes(buffer, Encoding.UTF8.GetBytes(arg));
        WriteU32(buffer, (uint)request.Files.Count);
        foreach (var file in request.Files)
        {
            WriteBytes(buffer, Encoding.UTF8.GetBytes(file.Name));
            WriteBytes(buffer, Encoding.UTF8.GetBytes(file.Content));
        }
        WriteBytes(buffer, Encoding.UTF8.GetBytes(request.Code));
        WriteBytes(buffer, request.Stdin);
        return buffer.ToArray();
    }

    /// <summary>Parses the 'X' payload (key=value lines) into the facts recorded in SandboxExited.</summary>
    public static ExitReport ParseExit(ReadOnlySpan<byte> payload)
    {
        var values = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var line in Encoding.ASCII.GetString(payload).Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = line.IndexOf('=');
            if (eq > 0 && long.TryParse(line.AsSpan(eq + 1), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var value))
                values[line[..eq]] = value;
        }
        long Get(string key) => values.TryGetValue(key, out var v) ? v : 0;
        var signal = (int)Get("signal");
        return new ExitReport(
            ExitCode: signal != 0 ? null : (int)Get("exit_code"),
            Signal: signal == 0 ? null : signal,
            TimedOut: Get("timed_out") == 1,
            OomKilled: Get("oom_killed") == 1,
            PidsLimitHit: Get("pids_limit_hit") == 1,
            StdoutProduced: Get("stdout_bytes"),
            StderrProduced: Get("stderr_bytes"),
            StdoutTruncated: Get("stdout_truncated") == 1,
            StderrTruncated: Get("stderr_truncated") == 1,
            WallUs: Get("wall_us"),
            CpuUserUs: Get("cpu_user_us"),
            CpuSysUs: Get("cpu_sys_us"),
            MaxRssKb: values.TryGetValue("max_rss_kb", out var rss) ? rss : null);
    }

    private static void WriteU32(Stream stream, uint value)
    {
        Span<byte> bytes = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(bytes, value);
        stream.Write(bytes);
    }

    private static void WriteBytes(Stream stream, byte[] bytes)
    {
        WriteU32(stream, (uint)bytes.Length);
        stream.Write(bytes);
    }
}

public sealed record ExitReport(
    int? ExitCode,
    int? Signal,
    bool TimedOut,
    bool OomKilled,
    bool PidsLimitHit,
    long StdoutProduced,
    long StderrProduced,
    bool StdoutTruncated,
    bool StderrTruncated,
    long WallUs,
    long CpuUserUs,
    long CpuSysUs,
    long? MaxRssKb);
