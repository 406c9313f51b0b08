using System.Security.Cryptography;

namespace Sandbox.Audited.Executor.Sandboxes;

/// <summary>
/// The memory all runs' captured output may take together (Executor:MaxBufferedOutputBytes). A stream keeps its bytes in
/// memory while the budget has room and spills the rest to a file, so the output held in memory stays bounded whatever
/// the number of runs and the size of their output.
/// </summary>
public sealed class OutputBudget(long bytes)
{
    private long _free = bytes;

    public long Free => Interlocked.Read(ref _free);

    public bool TryTake(long count)
    {
        while (true)
        {
            var free = Interlocked.Read(ref _free);
            if (free < count)
                return false;
            if (Interlocked.CompareExchange(ref _free, free - count, free) == free)
                return true;
        }
    }

    public void Give(long count) => Interlocked.Add(ref _free, count);
}

/// <summary>
/// A run's output of one stream: keeps at most cap bytes, counts everything offered, and hashes what it keeps as it
/// arrives. Bytes are kept in memory while the shared budget allows; past it the rest goes to a spool file, from which it
/// is stored without ever being held whole.
/// </summary>
public sealed class CapturedOutput(int cap, OutputBudget budget, string spoolDirectory) : IDisposable
{
    private readonly List<ReadOnlyMemory<byte>> _chunks = [];
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private long _inMemory;
    private long _kept;
    private FileStream? _spill;
    private string? _sha256;

    public long Produced { get; private set; }

    public bool Truncated => Produced > _kept;

    /// <summary>The bytes kept.</summary>
    public long Length => _kept;

    /// <summary>Whether part of the output went to the spool file (the budget was used up).</summary>
    public bool Spilled => _spill is not null;

    /// <summary>SHA-256 (lower-case hex) of the bytes kept; asked once the stream has ended.</summary>
    public string Sha256 => _sha256 ??= Convert.ToHexStringLower(_hash.GetHashAndReset());

    public async ValueTask<int> AppendAsync(ReadOnlyMemory<byte> bytes, CancellationToken ct)
    {
        Produced += bytes.Length;
        var kept = (int)Math.Min(Math.Max(0, cap - _kept), bytes.Length);
        if (kept == 0)
            return 0;
        var part = bytes[..kept];
        _hash.AppendData(part.Span);
        // Once spilled, everything after goes to the file too: memory chunks first, then the file, in order.
        if (_spill is null && budget.TryTake(kept))
        {
            _chunks.Add(part.ToArray()); // the frame's payload is the reader's buffer, reused for the next frame
            _inMemory += kept;
        }
        else
        {
            _spill ??= CreateSpill();
            await _spill.WriteAsync(part, ct);
        }
        _kept += kept;
        return kept;
    }

    /// <summary>The bytes kept, read from memory and then the spool file.</summary>
    public async Task<Stream> OpenReadAsync(CancellationToken ct)
    {
        if (_spill is not null)
            await _spill.FlushAsync(ct);
        return new Reader(_chunks, _spill?.Name);
    }

    /// <summary>
    /// All of it in one array: output that fits one chunk and never spilled (committed with the outcome), or bytes that must
    /// go inside an event (the evidence store is away).
    /// </summary>
    public async Task<byte[]> ToArrayAsync(CancellationToken ct)
    {
        var all = new byte[checked((int)_kept)];
        await using var stream = await OpenReadAsync(ct);
        await stream.ReadExactlyAsync(all, ct);
        return all;
    }

    public void Dispose()
    {
        budget.Give(_inMemory);
        _inMemory = 0;
        _chunks.Clear();
        if (_spill is { } spill)
        {
            spill.Dispose();
            File.Delete(spill.Name);
            _spill = null;
        }
        _hash.Dispose();
    }

    private FileStream CreateSpill()
    {
        Directory.CreateDirectory(spoolDirectory);
        return new FileStream(Path.Combine(spoolDirectory, "out-" + Guid.NewGuid().ToString("N")), FileMode.CreateNew, FileAccess.Write,
            FileShare.Read, 64 * 1024, FileOptions.Asynchronous);
    }

    private sealed class Reader(List<ReadOnlyMemory<byte>> chunks, string? spill) : Stream
    {
        private int _chunk;
        private int _offset;
        private FileStream? _file;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            while (_chunk < chunks.Count)
            {
                var rest = chunks[_chunk].Length - _offset;
                if (rest == 0)
                {
                    _chunk++;
                    _offset = 0;
                    continue;
                }
                var count = Math.Min(rest, buffer.Length);
                chunks[_chunk].Slice(_offset, count).CopyTo(buffer);
                _offset += count;
                return count;
            }
            if (spill is null)
                return 0;
            _file ??= new FileStream(spill, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 64 * 1024,
                FileOptions.Asynchronous | FileOptions.SequentialScan);
            return await _file.ReadAsync(buffer, cancellationToken);
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
                _file?.Dispose();
            base.Dispose(disposing);
        }

        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
