using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Domain.Text;

namespace Sandbox.Audited.Executor.Sandboxes;

/// <summary>
/// The wire protocol of sbx-supervisor (src/Executor/Runtimes/supervisor; the protocol table is in src/Executor/Runtimes/README.md).
/// Request on the container's stdin: "SBX2", u32 timeoutMs, u32 outputCap, u32 maxArtifacts, u64 maxArtifactBytes, u64
/// maxArtifactsTotal, u64 maxInputBytes, u32 argc + (u32 len, bytes)*, u32 filec + (u32 len, name, u64 len, content)*,
/// u32 len + code, u32 len + stdin (all big-endian). Replies on stdout as frames: u8 type, u32 length, payload — 'R' ready,
/// 'O' stdout, 'E' stderr, 'A'/'D'/'Z' an artifact's header/data/end, 'S' a skipped entry, 'X' exit report, 'F' fault.
/// </summary>
public static class SupervisorProtocol
{
    public const byte Ready = (byte)'R';
    public const byte Stdout = (byte)'O';
    public const byte Stderr = (byte)'E';
    public const byte ArtifactStart = (byte)'A';
    public const byte ArtifactData = (byte)'D';
    public const byte ArtifactEnd = (byte)'Z';
    public const byte ArtifactSkipped = (byte)'S';
    public const byte Exit = (byte)'X';
    public const byte Fault = (byte)'F';

    private const int Chunk = 64 * 1024;

    /// <summary>
    /// Writes the request: the small parts at once, each file's content streamed from its source a chunk at a time, so
    /// a 64 MB input never sits in the service's memory.
    /// </summary>
    public static async Task WriteRequestAsync(
        Func<byte[], int, CancellationToken, Task> write, ValidRunRequest request, int timeoutMs, int outputCap, ArtifactCaps caps, CancellationToken ct)
    {
        using var head = new MemoryStream();
        head.Write("SBX2"u8);
        WriteU32(head, (uint)timeoutMs);
        WriteU32(head, (uint)outputCap);
        WriteU32(head, (uint)caps.MaxCount);
        WriteU64(head, (ulong)caps.MaxFileBytes);
        WriteU64(head, (ulong)caps.MaxTotalBytes);
        WriteU64(head, (ulong)request.Files.Sum(f => f.Bytes));
        WriteU32(head, (uint)request.Args.Count);
        foreach (var arg in request.Args)
            WriteBytes(head, Encoding.UTF8.GetBytes(arg));
        WriteU32(head, (uint)request.Files.Count);
        var buffer = new byte[Chunk];
        foreach (var file in request.Files)
        {
            WriteBytes(head, Encoding.UTF8.GetBytes(file.Name));
            WriteU64(head, (ulong)file.Bytes);
            await write(head.ToArray(), (int)head.Length, ct);
            head.SetLength(0);
            await using var content = await file.Open(ct);
            long sent = 0;
            int read;
            while (sent < file.Bytes && (read = await content.ReadAsync(buffer.AsMemory(0, (int)Math.Min(Chunk, file.Bytes - sent)), ct)) > 0)
            {
                await write(buffer, read, ct);
                sent += read;
            }
            if (sent != file.Bytes)
                throw new InvalidDataException($"Input file '{file.Name}' changed while it was sent: {sent} of {file.Bytes} bytes.");
        }
        WriteBytes(head, Encoding.UTF8.GetBytes(request.Code));
        WriteBytes(head, request.Stdin);
        await write(head.ToArray(), (int)head.Length, ct);
    }

    /// <summary>An 'A' payload: u64 size, then the artifact's relative name (UTF-8, validated by the supervisor).</summary>
    public static (long Size, string Name) ParseArtifactStart(ReadOnlySpan<byte> payload) =>
        ((long)BinaryPrimitives.ReadUInt64BigEndian(payload), Utf8Text.Strict.GetString(payload[8..]));

    /// <summary>An 'S' payload: reason, NUL, the entry's relative name as found (control characters and bad UTF-8 escaped).</summary>
    public static (string Reason, string Name) ParseSkipped(ReadOnlySpan<byte> payload)
    {
        var nul = payload.IndexOf((byte)0);
        if (nul < 0)
            return ("unknown", Escape(payload));
        return (Encoding.ASCII.GetString(payload[..nul]), Escape(payload[(nul + 1)..]));
    }

    public static long ParseArtifactEnd(ReadOnlySpan<byte> payload) => (long)BinaryPrimitives.ReadUInt64BigEndian(payload);

    private static string Escape(ReadOnlySpan<byte> bytes)
    {
        var text = new UTF8Encoding(false, false).GetString(bytes);
        var sb = new StringBuilder(text.Length);
        foreach (var c in text)
            sb.Append(char.IsControl(c) ? $"\\u{(int)c:x4}" : c.ToString());
        return sb.ToString();
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

    private static void WriteU64(Stream stream, ulong value)
    {
        Span<byte> bytes = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(bytes, value);
        stream.Write(bytes);
    }

    private static void WriteBytes(Stream stream, byte[] bytes)
    {
        WriteU32(stream, (uint)bytes.Length);
        stream.Write(bytes);
    }
}

/// <summary>What the supervisor may send back from the output directory (Executor:MaxArtifacts, MaxArtifactBytes, MaxArtifactsTotalBytes).</summary>
public sealed record ArtifactCaps(int MaxCount, long MaxFileBytes, long MaxTotalBytes);

/// <summary>
/// One entry of the program's output directory: a file received whole (spooled at Path, hashed as it arrived) or an entry
/// not sent, with why (symlink, fifo, device, socket, not_regular, unreadable, bad_name, too_deep, count_cap, file_cap,
/// total_cap, unlisted, incomplete).
/// </summary>
public sealed record CollectedArtifact(string Name, long Bytes, string? Sha256, string? Path, string? Skipped);
