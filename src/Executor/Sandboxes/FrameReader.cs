using System.Buffers.Binary;
using Docker.DotNet;

namespace Sandbox.Audited.Executor.Sandboxes;

/// <summary>A supervisor frame; its payload is a view of the reader's buffer, valid until the next NextAsync or Watch.</summary>
public readonly record struct Frame(byte Type, ReadOnlyMemory<byte> Payload);

/// <summary>
/// Reads supervisor frames from the container's attached stdout. Payloads are bounded (the supervisor
/// writes chunks of at most 64 KiB) so a misbehaving container cannot make the service buffer much.
/// The supervisor's own stderr (diagnostics, never user output) is collected separately, capped.
/// </summary>
public sealed class FrameReader(MultiplexedStream stream)
{
    public const int MaxPayload = 1024 * 1024;
    private const int MaxDiagnostics = 8192;

    private readonly byte[] _chunk = new byte[81920];
    private byte[] _buffer = new byte[81920];
    private int _start;
    private int _end;
    private bool _eof;
    private Task? _watch;

    public string Diagnostics { get; private set; } = "";

    /// <summary>
    /// Keeps one read outstanding while the sandbox waits in the pool, so that a stream the engine closed (container gone,
    /// engine restarted, connection broken) is noticed before the sandbox is handed out. The next NextAsync takes it over.
    /// </summary>
    public void Watch() => _watch ??= FillAsync(CancellationToken.None);

    /// <summary>False once the watched stream ended or broke; a ready sandbox's supervisor writes nothing until it gets a request.</summary>
    public bool StreamAlive => !_eof && _watch is not { IsFaulted: true } and not { IsCanceled: true };

    /// <summary>The next frame, or null at the end of the stream.</summary>
    public async Task<Frame?> NextAsync(CancellationToken ct)
    {
        while (true)
        {
            var available = _end - _start;
            if (available >= 5)
            {
                var length = (int)BinaryPrimitives.ReadUInt32BigEndian(_buffer.AsSpan(_start + 1, 4));
                if (length < 0 || length > MaxPayload)
                    throw new InvalidDataException($"Supervisor frame of {length} bytes exceeds the {MaxPayload}-byte bound.");
                if (available >= 5 + length)
                {
                    // No copy: output goes on to a spool file or is copied by whoever keeps it, so frames allocate nothing.
                    var frame = new Frame(_buffer[_start], _buffer.AsMemory(_start + 5, length));
                    _start += 5 + length;
                    return frame;
                }
            }
            if (_eof)
                return null;
            if (_watch is { } watch)
            {
                await watch.WaitAsync(ct);
                _watch = null;
                continue;
            }
            await FillAsync(ct);
        }
    }

    private async Task FillAsync(CancellationToken ct)
    {
        var result = await stream.ReadOutputAsync(_chunk, 0, _chunk.Length, ct);
        if (result.EOF)
        {
            _eof = true;
            return;
        }
        if (result.Target == MultiplexedStream.TargetStream.StandardError)
        {
            if (Diagnostics.Length < MaxDiagnostics)
                Diagnostics += System.Text.Encoding.UTF8.GetString(_chunk, 0, Math.Min(result.Count, MaxDiagnostics - Diagnostics.Length));
            return;
        }
        if (_start > 0 && _start == _end)
        {
            _start = _end = 0;
        }
        if (_end + result.Count > _buffer.Length)
        {
            // Compact, then grow only if one frame really needs it (bounded by MaxPayload).
            var live = _end - _start;
            var size = Math.Max(_buffer.Length, live + result.Count);
            var next = size > _buffer.Length ? new byte[size] : _buffer;
            Buffer.BlockCopy(_buffer, _start, next, 0, live);
            _buffer = next;
            _start = 0;
            _end = live;
        }
        Buffer.BlockCopy(_chunk, 0, _buffer, _end, result.Count);
        _end += result.Count;
    }
}
