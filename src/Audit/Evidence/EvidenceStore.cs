using System.Buffers;
using System.Security.Cryptography;
using Npgsql;
using NpgsqlTypes;

namespace Sandbox.Audited.Audit.Evidence;

/// <summary>Content as stored: its SHA-256 (lower-case hex) and its length in bytes.</summary>
public sealed record StoredContent(string Sha256, long Bytes);

/// <summary>What the store holds under a digest: the content, only the record that it was erased, or nothing.</summary>
public enum ContentState { Missing, Present, Erased }

/// <summary>Thrown when content is read that an erasure removed; the digest and size are still on record.</summary>
public sealed class ContentErasedException(string tenant, string sha256)
    : Exception($"Content {sha256} of tenant '{tenant}' was erased; only its digest and size remain on record.")
{
    public string Sha256 { get; } = sha256;
}

/// <summary>
/// Content-addressed evidence store (sandbox.evidence_blobs + evidence_chunks): code, inputs, outputs and artifacts
/// kept by SHA-256, once per content per tenant, in chunks of at most 1 MiB. Content is streamed in (hashed while it
/// is spooled to a temporary file, then inserted) and streamed out chunk by chunk; it is never held whole in memory.
/// The service's role may add and read, never change or remove; erasure is a separate path (EvidenceEraser).
/// </summary>
public sealed class EvidenceStore(NpgsqlDataSource dataSource)
{
    public const int ChunkSize = 1024 * 1024;
    private const int SpoolBufferSize = 81920;

    private static string Blobs => $"{MartenSetup.Schema}.evidence_blobs";
    private static string Chunks => $"{MartenSetup.Schema}.evidence_chunks";

    /// <summary>Stores the stream's content unless the tenant already has it; a second put of the same content is a no-op.</summary>
    public async Task<StoredContent> PutAsync(string tenant, Stream content, CancellationToken ct)
    {
        var spool = Path.Combine(Path.GetTempPath(), $"sbx-evidence-{Guid.NewGuid():N}");
        try
        {
            string sha256;
            long bytes = 0;
            await using (var file = new FileStream(spool, FileMode.CreateNew, FileAccess.Write, FileShare.None, SpoolBufferSize,
                             FileOptions.Asynchronous))
            using (var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256))
            {
                var buffer = ArrayPool<byte>.Shared.Rent(SpoolBufferSize);
                try
                {
                    int read;
                    while ((read = await content.ReadAsync(buffer.AsMemory(0, SpoolBufferSize), ct)) > 0)
                    {
                        hash.AppendData(buffer, 0, read);
                        await file.WriteAsync(buffer.AsMemory(0, read), ct);
                        bytes += read;
                    }
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                }
                sha256 = Convert.ToHexStringLower(hash.GetHashAndReset());
            }

            if (await StateAsync(tenant, sha256, ct) != ContentState.Missing)
                return new StoredContent(sha256, bytes);
            await using var source = new FileStream(spool, FileMode.Open, FileAccess.Read, FileShare.Read, SpoolBufferSize, FileOptions.Asynchronous);
            await InsertAsync(tenant, sha256, bytes, source, ct);
            return new StoredContent(sha256, bytes);
        }
        finally
        {
            File.Delete(spool);
        }
    }

    /// <summary>Stores content already in memory (small values: code, stdin, captured output).</summary>
    public async Task<StoredContent> PutAsync(string tenant, ReadOnlyMemory<byte> content, CancellationToken ct)
    {
        var sha256 = Convert.ToHexStringLower(SHA256.HashData(content.Span));
        if (await StateAsync(tenant, sha256, ct) == ContentState.Missing)
            await InsertAsync(tenant, sha256, content.Length, new MemoryReadStream(content), ct);
        return new StoredContent(sha256, content.Length);
    }

    public async Task<ContentState> StateAsync(string tenant, string sha256, CancellationToken ct)
    {
        await using var select = dataSource.CreateCommand($"SELECT erased_at IS NOT NULL FROM {Blobs} WHERE tenant = $1 AND sha256 = $2");
        select.Parameters.AddWithValue(tenant);
        select.Parameters.AddWithValue(sha256);
        var erased = await select.ExecuteScalarAsync(ct);
        return erased switch
        {
            null or DBNull => ContentState.Missing,
            true => ContentState.Erased,
            _ => ContentState.Present,
        };
    }

    /// <summary>The recorded size of stored content, or null when the tenant has none under the digest.</summary>
    public async Task<long?> SizeAsync(string tenant, string sha256, CancellationToken ct)
    {
        await using var select = dataSource.CreateCommand($"SELECT bytes FROM {Blobs} WHERE tenant = $1 AND sha256 = $2");
        select.Parameters.AddWithValue(tenant);
        select.Parameters.AddWithValue(sha256);
        return await select.ExecuteScalarAsync(ct) is long bytes ? bytes : null;
    }

    /// <summary>Streams the content back chunk by chunk; null when absent; throws ContentErasedException when erased.</summary>
    public async Task<Stream?> OpenAsync(string tenant, string sha256, CancellationToken ct)
    {
        await using var select = dataSource.CreateCommand($"SELECT chunks, erased_at IS NOT NULL FROM {Blobs} WHERE tenant = $1 AND sha256 = $2");
        select.Parameters.AddWithValue(tenant);
        select.Parameters.AddWithValue(sha256);
        await using var reader = await select.ExecuteReaderAsync(ct);
        if (!await reader.ReadAsync(ct))
            return null;
        if (reader.GetBoolean(1))
            throw new ContentErasedException(tenant, sha256);
        return new ChunkStream(dataSource, tenant, sha256, reader.GetInt32(0));
    }

    /// <summary>Reads at most <paramref name="maxBytes"/> of stored content (for previews and capped API answers).</summary>
    public async Task<byte[]?> ReadPrefixAsync(string tenant, string sha256, int maxBytes, CancellationToken ct)
    {
        await using var stream = await OpenAsync(tenant, sha256, ct);
        if (stream is null)
            return null;
        var buffer = new byte[maxBytes];
        var total = 0;
        int read;
        while (total < maxBytes && (read = await stream.ReadAsync(buffer.AsMemory(total, maxBytes - total), ct)) > 0)
            total += read;
        return buffer[..total];
    }

    /// <summary>Rehashes stored content: Present when it still hashes to its digest, Changed when not, or Erased/Missing.</summary>
    public async Task<ContentCheck> CheckAsync(string tenant, string sha256, CancellationToken ct)
    {
        Stream? stream;
        try
        {
            stream = await OpenAsync(tenant, sha256, ct);
        }
        catch (ContentErasedException)
        {
            return ContentCheck.Erased;
        }
        if (stream is null)
            return ContentCheck.Missing;
        await using (stream)
        {
            var actual = Convert.ToHexStringLower(await SHA256.HashDataAsync(stream, ct));
            var size = await SizeAsync(tenant, sha256, ct);
            return actual == sha256 && size == ((ChunkStream)stream).BytesRead ? ContentCheck.Intact : ContentCheck.Changed;
        }
    }

    // Blob row and chunks in one transaction: a concurrent put of the same content waits on the key, then does nothing.
    private async Task InsertAsync(string tenant, string sha256, long bytes, Stream source, CancellationToken ct)
    {
        var chunks = (int)((bytes + ChunkSize - 1) / ChunkSize);
        await using var connection = await dataSource.OpenConnectionAsync(ct);
        await using var transaction = await connection.BeginTransactionAsync(ct);
        await using (var blob = new NpgsqlCommand(
            $"INSERT INTO {Blobs} (tenant, sha256, bytes, chunks) VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, sha256) DO NOTHING", connection, transaction))
        {
            blob.Parameters.AddWithValue(tenant);
            blob.Parameters.AddWithValue(sha256);
            blob.Parameters.AddWithValue(bytes);
            blob.Parameters.AddWithValue(chunks);
            if (await blob.ExecuteNonQueryAsync(ct) == 0)
                return;
        }
        var buffer = ArrayPool<byte>.Shared.Rent(ChunkSize);
        try
        {
            for (var chunkNo = 0; chunkNo < chunks; chunkNo++)
            {
                var filled = 0;
                int read;
                while (filled < ChunkSize && (read = await source.ReadAsync(buffer.AsMemory(filled, ChunkSize - filled), ct)) > 0)
                    filled += read;
                await using var chunk = new NpgsqlCommand(
                    $"INSERT INTO {Chunks} (tenant, sha256, chunk_no, data) VALUES ($1, $2, $3, $4)", connection, transaction);
                chunk.Parameters.AddWithValue(tenant);
                chunk.Parameters.AddWithValue(sha256);
                chunk.Parameters.AddWithValue(chunkNo);
                chunk.Parameters.Add(new NpgsqlParameter<ReadOnlyMemory<byte>> { TypedValue = buffer.AsMemory(0, filled), NpgsqlDbType = NpgsqlDbType.Bytea });
                await chunk.ExecuteNonQueryAsync(ct);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        await transaction.CommitAsync(ct);
    }

    /// <summary>Reads one chunk at a time, each with its own short query, so a reader never pins a connection.</summary>
    private sealed class ChunkStream(NpgsqlDataSource dataSource, string tenant, string sha256, int chunks) : Stream
    {
        private byte[] _current = [];
        private int _offset;
        private int _next;

        public long BytesRead { get; private set; }
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => BytesRead; set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            while (_offset >= _current.Length)
            {
                if (_next >= chunks)
                    return 0;
                _current = await FetchAsync(_next++, cancellationToken);
                _offset = 0;
            }
            var count = Math.Min(buffer.Length, _current.Length - _offset);
            _current.AsMemory(_offset, count).CopyTo(buffer);
            _offset += count;
            BytesRead += count;
            return count;
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        private async Task<byte[]> FetchAsync(int chunkNo, CancellationToken ct)
        {
            await using var select = dataSource.CreateCommand($"SELECT data FROM {Chunks} WHERE tenant = $1 AND sha256 = $2 AND chunk_no = $3");
            select.Parameters.AddWithValue(tenant);
            select.Parameters.AddWithValue(sha256);
            select.Parameters.AddWithValue(chunkNo);
            // A chunk deleted behind the blob's back (erasure is the only legitimate path) reads as empty: the rehash fails.
            return await select.ExecuteScalarAsync(ct) as byte[] ?? [];
        }

        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    private sealed class MemoryReadStream(ReadOnlyMemory<byte> content) : Stream
    {
        private int _position;
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => content.Length;
        public override long Position { get => _position; set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            var count = Math.Min(buffer.Length, content.Length - _position);
            content.Span.Slice(_position, count).CopyTo(buffer);
            _position += count;
            return count;
        }

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => new(Read(buffer.Span));
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}

/// <summary>The outcome of rehashing stored content against its digest.</summary>
public enum ContentCheck { Intact, Changed, Erased, Missing }
