using System.Buffers;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Marten;
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
/// kept by SHA-256, once per content per tenant, in chunks of at most 1 MiB. Content is streamed in from where its writer
/// spooled and hashed it (verified again while inserted) and streamed out chunk by chunk; it is never held whole in memory.
/// The service's role may add and read, never change or remove; erasure is a separate path (EvidenceEraser).
/// The empty content is always read as empty, whatever its row says: it has no byte to erase (earlier versions could mark it erased).
/// </summary>
public sealed class EvidenceStore(NpgsqlDataSource dataSource)
{
    public const int ChunkSize = 1024 * 1024;

    /// <summary>The SHA-256 of no bytes: every run's empty stdin or output stream; never erased, always readable.</summary>
    public const string EmptySha256 = Domain.Evidence.EvidenceSweep.EmptySha256;

    private static string Blobs => $"{MartenSetup.Schema}.evidence_blobs";
    private static string Chunks => $"{MartenSetup.Schema}.evidence_chunks";

    /// <summary>
    /// Stores content whose digest and size the caller already knows (it hashed the bytes while it spooled them): read once,
    /// from its spool straight into the store, and hashed again on the way; content that does not match is refused
    /// (InvalidDataException) and nothing is kept. A put of content the tenant already has, or erased (even before it was
    /// first stored: a tombstone), reads nothing. Either way the content is held for the run (EvidenceHolds): the evidence
    /// sweep leaves it alone until that run can no longer name it.
    /// </summary>
    public Task<StoredContent> PutAsync(string tenant, StoredContent expected, Stream source, ContentHold hold, CancellationToken ct) =>
        PutCoreAsync(tenant, expected, source, hold, ct);

    /// <summary>Stores content already in memory (small values: code, stdin, captured output), held for the run as above.</summary>
    public Task<StoredContent> PutAsync(string tenant, ReadOnlyMemory<byte> content, ContentHold hold, CancellationToken ct) =>
        PutCoreAsync(tenant, new StoredContent(Convert.ToHexStringLower(SHA256.HashData(content.Span)), content.Length), new MemoryReadStream(content), hold, ct);

    // One transaction: the writer's side of the sweep's lock on (tenant, digest), then what the store holds under the digest
    // (read after the lock, so a removal that committed meanwhile is seen and the content stored again), the content if it
    // is missing, and the hold; the sweep cannot remove the content between the look and the hold.
    private async Task<StoredContent> PutCoreAsync(string tenant, StoredContent expected, Stream source, ContentHold hold, CancellationToken ct)
    {
        await using var connection = await dataSource.OpenConnectionAsync(ct);
        await using var transaction = await connection.BeginTransactionAsync(ct);
        await using (var rely = new NpgsqlCommand($"SELECT {MartenSetup.Schema}.sbx_evidence_rely($1, $2)", connection, transaction))
        {
            rely.Parameters.AddWithValue(tenant);
            rely.Parameters.AddWithValue(expected.Sha256);
            await rely.ExecuteNonQueryAsync(ct);
        }
        bool? erased;
        await using (var select = new NpgsqlCommand($"SELECT erased_at IS NOT NULL FROM {Blobs} WHERE tenant = $1 AND sha256 = $2", connection, transaction))
        {
            select.Parameters.AddWithValue(tenant);
            select.Parameters.AddWithValue(expected.Sha256);
            erased = await select.ExecuteScalarAsync(ct) as bool?;
        }
        if (erased is null)
            await InsertAsync(connection, transaction, tenant, expected.Sha256, expected.Bytes, source, ct);
        if (erased is not true)
            await EvidenceHolds.AddAsync(connection, transaction, tenant, expected.Sha256, hold, ct);
        await transaction.CommitAsync(ct);
        return expected;
    }

    /// <summary>
    /// Holds contents the tenant already has for a run that will name them (an outcome waiting in a node's journal names
    /// artifacts stored before it): one not stored, or erased, is left as it is. A hold of another node is taken over, since
    /// this node's heartbeat is the one that renews it now.
    /// </summary>
    public async Task HoldStoredAsync(string tenant, IReadOnlyList<string> sha256s, ContentHold hold, CancellationToken ct)
    {
        if (sha256s.Count == 0)
            return;
        await using var connection = await dataSource.OpenConnectionAsync(ct);
        await using var transaction = await connection.BeginTransactionAsync(ct);
        // The writer's side of the sweep's key first (in digest order), so that a removal under way is seen before the look.
        await using (var rely = new NpgsqlCommand(
            $"SELECT {MartenSetup.Schema}.sbx_evidence_rely($1, d) FROM unnest($2::text[]) d ORDER BY d COLLATE \"C\"", connection, transaction))
        {
            rely.Parameters.AddWithValue(tenant);
            rely.Parameters.AddWithValue(sha256s.ToArray());
            await rely.ExecuteNonQueryAsync(ct);
        }
        await using (var insert = new NpgsqlCommand(
            $"INSERT INTO {MartenSetup.Schema}.evidence_holds AS h (tenant, sha256, run_id, node) SELECT $1, d, $3, $4 FROM unnest($2::text[]) d "
            + $"WHERE EXISTS (SELECT 1 FROM {Blobs} b WHERE b.tenant = $1 AND b.sha256 = d AND b.erased_at IS NULL) "
            + "ON CONFLICT (tenant, sha256, run_id) DO UPDATE SET node = EXCLUDED.node, held_at = now() WHERE h.node <> EXCLUDED.node", connection, transaction))
        {
            insert.Parameters.AddWithValue(tenant);
            insert.Parameters.AddWithValue(sha256s.ToArray());
            insert.Parameters.AddWithValue(hold.RunId);
            insert.Parameters.AddWithValue(hold.Node);
            await insert.ExecuteNonQueryAsync(ct);
        }
        await transaction.CommitAsync(ct);
    }

    // Content that fits one chunk (code, stdin, most outputs): the blob row and its chunk in one statement; content the tenant already has (present, erased or a tombstone) is left as it is.
    // p names the n-th parameter: "?" for a Marten unit of work, "$n" for Npgsql.
    // The writer first takes its side of the evidence sweep's lock on (tenant, digest) (sbx_evidence_rely), held to its commit:
    // the sweep cannot remove a content this commit finds stored, and one it removed before is stored again here.
    private static string InsertSmall(Func<int, string> p) =>
        $"WITH v AS (SELECT {p(1)}::text AS tenant, {p(2)}::text AS sha256, {p(3)}::bigint AS bytes, {p(4)}::integer AS chunks), "
        + $"blob AS (INSERT INTO {Blobs} (tenant, sha256, bytes, chunks) SELECT tenant, sha256, bytes, chunks FROM v WHERE {MartenSetup.Schema}.sbx_evidence_rely(tenant, sha256) "
        + "ON CONFLICT (tenant, sha256) DO NOTHING "
        + $"RETURNING tenant, sha256) INSERT INTO {Chunks} (tenant, sha256, chunk_no, data) SELECT tenant, sha256, 0, {p(5)} FROM blob WHERE {p(6)}";

    /// <summary>
    /// Adds contents that fit one chunk each to a unit of work about to commit (the write-ahead commit of the run that names
    /// them, or its outcome commit): they and the events that cite their digests commit together or not at all, with no round
    /// trip of their own.
    /// </summary>
    public static void Stage(IDocumentSession session, string tenant, IReadOnlyList<ReadOnlyMemory<byte>> contents)
    {
        foreach (var (sha256, content) in InLockOrder(Hashed(contents)))
            session.QueueSqlCommand(InsertSmall(_ => "?"), tenant, sha256, (long)content.Length, content.IsEmpty ? 0 : 1, ArrayOf(content), !content.IsEmpty);
    }

    // The bytes as one array, without a copy when they are one already (a run's captured output).
    private static byte[] ArrayOf(ReadOnlyMemory<byte> content) =>
        MemoryMarshal.TryGetArray(content, out var segment) && segment is { Offset: 0, Array: { } array } && segment.Count == array.Length ? array : content.ToArray();

    // Each content hashed once; inserted once each, in digest order: two transactions inserting the same contents lock their
    // rows in the same order, so they cannot deadlock (a run's code and stdin, or stdout and stderr, swapped by another run).
    private static (string Sha256, ReadOnlyMemory<byte> Content)[] Hashed(IReadOnlyList<ReadOnlyMemory<byte>> contents)
    {
        foreach (var content in contents)
            if (content.Length > ChunkSize)
                throw new ArgumentOutOfRangeException(nameof(contents), $"Only content that fits one chunk ({ChunkSize} bytes) is stored in one statement; stream larger content with PutAsync.");
        return [.. contents.Select(c => (Convert.ToHexStringLower(SHA256.HashData(c.Span)), c))];
    }

    private static IEnumerable<(string Sha256, ReadOnlyMemory<byte> Content)> InLockOrder(IEnumerable<(string Sha256, ReadOnlyMemory<byte> Content)> hashed) =>
        hashed.DistinctBy(c => c.Sha256).OrderBy(c => c.Sha256, StringComparer.Ordinal);

    /// <summary>What a reader gets under the digest: the empty content is always Present.</summary>
    public async Task<ContentState> StateAsync(string tenant, string sha256, CancellationToken ct) =>
        sha256 == EmptySha256 ? ContentState.Present : await RowStateAsync(tenant, sha256, ct);

    // What the tenant's row says (for puts: an erased row, tombstone or not, keeps the content out).
    private async Task<ContentState> RowStateAsync(string tenant, string sha256, CancellationToken ct)
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

    /// <summary>The state of several contents in one query; a digest the tenant has nothing under is Missing.</summary>
    public async Task<IReadOnlyDictionary<string, ContentState>> StatesAsync(string tenant, IReadOnlyList<string> sha256s, CancellationToken ct)
    {
        var states = sha256s.Distinct().ToDictionary(sha => sha, _ => ContentState.Missing);
        await using var select = dataSource.CreateCommand($"SELECT sha256, erased_at IS NOT NULL FROM {Blobs} WHERE tenant = $1 AND sha256 = ANY($2)");
        select.Parameters.AddWithValue(tenant);
        select.Parameters.AddWithValue(states.Keys.ToArray());
        await using var reader = await select.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
            states[reader.GetString(0)] = reader.GetBoolean(1) ? ContentState.Erased : ContentState.Present;
        if (states.ContainsKey(EmptySha256))
            states[EmptySha256] = ContentState.Present;
        return states;
    }

    /// <summary>The recorded size of stored content, or null when the tenant has none under the digest (or only a tombstone).</summary>
    public async Task<long?> SizeAsync(string tenant, string sha256, CancellationToken ct)
    {
        if (sha256 == EmptySha256)
            return 0;
        await using var select = dataSource.CreateCommand($"SELECT bytes FROM {Blobs} WHERE tenant = $1 AND sha256 = $2");
        select.Parameters.AddWithValue(tenant);
        select.Parameters.AddWithValue(sha256);
        return await select.ExecuteScalarAsync(ct) is long bytes ? bytes : null;
    }

    /// <summary>Streams the content back chunk by chunk; null when absent; throws ContentErasedException when erased.</summary>
    public async Task<Stream?> OpenAsync(string tenant, string sha256, CancellationToken ct)
    {
        if (sha256 == EmptySha256)
            return new MemoryReadStream(ReadOnlyMemory<byte>.Empty);
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

    /// <summary>
    /// Whole contents by digest, in one round trip for all of them (the code and stdin an executor reads for a run another
    /// node recorded): each is checked against its digest. Null for a content the store does not hold; erased content throws
    /// <see cref="ContentErasedException"/>. Content larger than one chunk is read chunk by chunk.
    /// </summary>
    public async Task<Dictionary<string, byte[]?>> ReadWholeAsync(string tenant, IReadOnlyCollection<string> digests, CancellationToken ct)
    {
        var found = digests.Distinct().ToDictionary(d => d, d => d == EmptySha256 ? Array.Empty<byte>() : null);
        var wanted = found.Where(f => f.Value is null).Select(f => f.Key).ToArray();
        if (wanted.Length == 0)
            return found;
        var larger = new List<(string Sha256, int Chunks)>();
        await using (var select = dataSource.CreateCommand(
            $"SELECT b.sha256, b.chunks, b.erased_at IS NOT NULL, c.data FROM {Blobs} b "
            + $"LEFT JOIN {Chunks} c ON b.chunks = 1 AND c.tenant = b.tenant AND c.sha256 = b.sha256 AND c.chunk_no = 0 "
            + "WHERE b.tenant = $1 AND b.sha256 = ANY ($2)"))
        {
            select.Parameters.AddWithValue(tenant);
            select.Parameters.AddWithValue(wanted);
            await using var reader = await select.ExecuteReaderAsync(ct);
            while (await reader.ReadAsync(ct))
            {
                var sha256 = reader.GetString(0);
                if (reader.GetBoolean(2))
                    throw new ContentErasedException(tenant, sha256);
                if (reader.GetInt32(1) != 1)
                    larger.Add((sha256, reader.GetInt32(1)));
                else
                    found[sha256] = reader.IsDBNull(3) ? [] : reader.GetFieldValue<byte[]>(3);
            }
        }
        foreach (var (sha256, chunks) in larger)
        {
            await using var stream = new ChunkStream(dataSource, tenant, sha256, chunks);
            using var buffer = new MemoryStream();
            await stream.CopyToAsync(buffer, ct);
            found[sha256] = buffer.ToArray();
        }
        foreach (var (sha256, bytes) in found)
            if (bytes is not null && !Domain.Hashing.Sha256Hex.Of(bytes).Equals(sha256, StringComparison.Ordinal))
                throw new InvalidDataException($"Content {sha256} does not hash to its digest: the store was altered.");
        return found;
    }

    /// <summary>When content was erased and the reason recorded with it; null when it is not erased (or not held).</summary>
    public async Task<ContentErasure?> ErasureAsync(string tenant, string sha256, CancellationToken ct)
    {
        await using var select = dataSource.CreateCommand($"SELECT erased_at, erase_reason FROM {Blobs} WHERE tenant = $1 AND sha256 = $2 AND erased_at IS NOT NULL");
        select.Parameters.AddWithValue(tenant);
        select.Parameters.AddWithValue(sha256);
        await using var reader = await select.ExecuteReaderAsync(ct);
        return await reader.ReadAsync(ct)
            ? new ContentErasure(reader.GetFieldValue<DateTimeOffset>(0), reader.IsDBNull(1) ? null : reader.GetString(1))
            : null;
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
        if (sha256 == EmptySha256)
            return ContentCheck.Intact;
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

    // Blob row and chunks in the put's transaction: a concurrent put of the same content waits on the key, then does nothing. The
    // bytes are hashed as they go in; a mismatch with the announced digest or size rolls it all back.
    private static async Task InsertAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, string tenant, string sha256, long bytes, Stream source, CancellationToken ct)
    {
        var chunks = (int)((bytes + ChunkSize - 1) / ChunkSize);
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
        // Sized to the content, so small puts (code, stdin, short output) never take a 1 MiB buffer.
        var buffer = ArrayPool<byte>.Shared.Rent((int)Math.Clamp(bytes, 1, ChunkSize));
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        try
        {
            for (var chunkNo = 0; chunkNo < chunks; chunkNo++)
            {
                var filled = 0;
                var want = (int)Math.Min(ChunkSize, bytes - (long)chunkNo * ChunkSize);
                int read;
                while (filled < want && (read = await source.ReadAsync(buffer.AsMemory(filled, want - filled), ct)) > 0)
                    filled += read;
                if (filled < want)
                    throw new InvalidDataException($"Content {sha256} ended after {(long)chunkNo * ChunkSize + filled} of its {bytes} bytes.");
                hash.AppendData(buffer, 0, filled);
                await using var chunk = new NpgsqlCommand(
                    $"INSERT INTO {Chunks} (tenant, sha256, chunk_no, data) VALUES ($1, $2, $3, $4)", connection, transaction);
                chunk.Parameters.AddWithValue(tenant);
                chunk.Parameters.AddWithValue(sha256);
                chunk.Parameters.AddWithValue(chunkNo);
                chunk.Parameters.Add(new NpgsqlParameter<ReadOnlyMemory<byte>> { TypedValue = buffer.AsMemory(0, filled), NpgsqlDbType = NpgsqlDbType.Bytea });
                await chunk.ExecuteNonQueryAsync(ct);
            }
            if (await source.ReadAsync(buffer.AsMemory(0, 1), ct) > 0)
                throw new InvalidDataException($"Content {sha256} is longer than its {bytes} bytes.");
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        if (Convert.ToHexStringLower(hash.GetHashAndReset()) != sha256)
            throw new InvalidDataException($"Content does not hash to {sha256}, the digest it was announced with; nothing was stored.");
    }

    /// <summary>
    /// Reads one chunk at a time, each with its own short query, so a reader never pins a connection; each chunk lands in
    /// one pooled buffer (sequential access: Npgsql does not buffer the row), so reading allocates nothing per chunk.
    /// </summary>
    private sealed class ChunkStream(NpgsqlDataSource dataSource, string tenant, string sha256, int chunks) : Stream
    {
        private byte[]? _buffer;
        private int _length;
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
            while (_offset >= _length)
            {
                if (_next >= chunks)
                    return 0;
                _length = await FetchAsync(_next++, cancellationToken);
                _offset = 0;
            }
            var count = Math.Min(buffer.Length, _length - _offset);
            _buffer.AsMemory(_offset, count).CopyTo(buffer);
            _offset += count;
            BytesRead += count;
            return count;
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        private async Task<int> FetchAsync(int chunkNo, CancellationToken ct)
        {
            await using var select = dataSource.CreateCommand($"SELECT octet_length(data), data FROM {Chunks} WHERE tenant = $1 AND sha256 = $2 AND chunk_no = $3");
            select.Parameters.AddWithValue(tenant);
            select.Parameters.AddWithValue(sha256);
            select.Parameters.AddWithValue(chunkNo);
            await using var reader = await select.ExecuteReaderAsync(System.Data.CommandBehavior.SequentialAccess, ct);
            // A chunk deleted behind the blob's back (erasure is the only legitimate path) reads as empty: the rehash fails.
            if (!await reader.ReadAsync(ct) || await reader.IsDBNullAsync(0, ct))
                return 0;
            var length = reader.GetInt32(0);
            if (_buffer is null || _buffer.Length < length)
            {
                if (_buffer is not null)
                    ArrayPool<byte>.Shared.Return(_buffer);
                _buffer = ArrayPool<byte>.Shared.Rent(Math.Max(length, 1));
            }
            var filled = 0;
            while (filled < length)
            {
                var read = (int)reader.GetBytes(1, filled, _buffer, filled, length - filled);
                if (read == 0)
                    break;
                filled += read;
            }
            return filled;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing && _buffer is not null)
            {
                ArrayPool<byte>.Shared.Return(_buffer);
                _buffer = null;
            }
            base.Dispose(disposing);
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

/// <summary>When stored content was erased, and why (as the erasure recorded it).</summary>
public sealed record ContentErasure(DateTimeOffset At, string? Reason);
