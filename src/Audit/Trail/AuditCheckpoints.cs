using System.Text.Json;
using Marten;
using Npgsql;
using NpgsqlTypes;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Domain.Audit;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Merkle;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Audit.Trail;

/// <summary>A tree head: the Merkle root over a tenant's events up to a global sequence (see <see cref="CheckpointRecorded"/>).</summary>
public sealed record TreeHead(long ToSequence, long TreeSize, string RootHash);

public sealed record RecordedCheckpoint(
    long Sequence, long Version, TreeHead Head, string Subject, string? KeyId, string? Signature, DateTimeOffset At,
    long? PreviousTreeSize = null, IReadOnlyList<string>? ConsistencyProof = null, string? Note = null);

/// <summary>A head that no longer matches the record (what it said, what the events as stored give now), or whose signature fails.</summary>
public sealed record CheckpointMismatch(TreeHead Expected, TreeHead Actual, long? CheckpointSequence, string Reason);

public sealed record CheckpointReport(bool Verified, int CheckpointsChecked, long EventsRead, CheckpointMismatch? FirstMismatch);

/// <summary>
/// Checkpoints make whole-run deletions detectable: the hash chain catches any change inside a run, but a run removed
/// with all its events leaves no broken link. A checkpoint commits to every event of the tenant up to a sequence.
/// </summary>
public sealed class AuditCheckpoints(NpgsqlDataSource database, IDocumentStore store, CheckpointSigner signer, NoteSigner notes, AuditTree tree, TimeProvider clock)
{
    private static readonly TimeSpan SettleTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan WriteGap = TimeSpan.FromMilliseconds(50);

    /// <summary>
    /// Records a checkpoint of the caller's tenant over everything committed so far: the stored tree is extended with
    /// the events since its last leaf (O(new events)), the root and the consistency proof from the previous checkpoint
    /// are read from stored subtrees (O(log n)).
    /// </summary>
    public async Task<RecordedCheckpoint> CreateAsync(Caller caller, string? correlationId, CancellationToken ct) =>
        (await CreateAsync(caller, correlationId, onlyIfChanged: false, ct))!;

    /// <summary>
    /// As <see cref="CreateAsync(Caller, string?, CancellationToken)"/>, but records nothing (null) when nothing but the
    /// tenant's own checkpoints was added since its last one, so a schedule does not checkpoint its checkpoints forever.
    /// </summary>
    public async Task<RecordedCheckpoint?> CreateIfChangedAsync(Caller caller, CancellationToken ct) =>
        await CreateAsync(caller, null, onlyIfChanged: true, ct);

    private async Task<RecordedCheckpoint?> CreateAsync(Caller caller, string? correlationId, bool onlyIfChanged, CancellationToken ct)
    {
        var toSequence = await SettledSequenceAsync(ct);
        var size = await tree.ExtendAsync(caller.Tenant, toSequence, ct);
        var streamId = CheckpointStreams.For(caller.Tenant);
        var previous = (await ListAsync(caller.Tenant, ct)).LastOrDefault();
        if (onlyIfChanged && previous is not null
            && (size == previous.Head.TreeSize || !await tree.GrewOutsideAsync(caller.Tenant, previous.Head.TreeSize, streamId, ct)))
            return null;
        if (onlyIfChanged && previous is null && size == 0)
            return null;

        var root = await tree.RootAsync(caller.Tenant, size, ct);
        var head = new TreeHead(toSequence, size, Convert.ToHexStringLower(root));
        IReadOnlyList<string>? proof = null;
        if (previous is not null && previous.Head.TreeSize <= size)
            proof = (await tree.HashesAsync(caller.Tenant, TreeProofs.ConsistencyRanges(previous.Head.TreeSize, size), ct))
                .Select(Convert.ToHexStringLower).ToList();
        var recorded = new CheckpointRecorded(streamId, caller, head.ToSequence, head.TreeSize, head.RootHash,
            signer.KeyId, signer.Sign(caller.Tenant, head), clock.GetUtcNow(),
            previous?.Head.TreeSize, proof, notes.Sign(caller.Tenant, size, root));
        await RunStream.AppendSharedAsync(store, streamId, new WriteContext(caller.Subject, correlationId, Tenant: caller.Tenant), recorded, ct);
        return (await ListAsync(caller.Tenant, ct)).Last(c => c.Head == head); // another auditor may have appended since
    }

    public async Task<IReadOnlyList<RecordedCheckpoint>> ListAsync(string tenant, CancellationToken ct)
    {
        await using var command = database.CreateCommand("""
            SELECT seq_id, version, (data ->> 'toSequence')::bigint, (data ->> 'treeSize')::bigint, data ->> 'rootHash',
                   data -> 'caller' ->> 'subject', data ->> 'keyId', data ->> 'signature', (data ->> 'at')::timestamptz,
                   (data ->> 'previousTreeSize')::bigint, data -> 'consistencyProof', data ->> 'note'
            FROM sandbox.mt_events WHERE stream_id = @stream AND type = 'checkpoint_recorded' ORDER BY version
            """);
        command.Parameters.Add(new NpgsqlParameter("stream", NpgsqlDbType.Uuid) { Value = CheckpointStreams.For(tenant) });
        var list = new List<RecordedCheckpoint>();
        await using var reader = await command.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
            list.Add(new RecordedCheckpoint(reader.GetInt64(0), reader.GetInt64(1),
                new TreeHead(reader.GetInt64(2), reader.GetInt64(3), reader.GetString(4)), reader.GetString(5),
                reader.IsDBNull(6) ? null : reader.GetString(6), reader.IsDBNull(7) ? null : reader.GetString(7), reader.GetFieldValue<DateTimeOffset>(8),
                reader.IsDBNull(9) ? null : reader.GetInt64(9),
                reader.IsDBNull(10) ? null : JsonSerializer.Deserialize<List<string>>(reader.GetString(10)),
                reader.IsDBNull(11) ? null : reader.GetString(11)));
        return list;
    }

    /// <summary>
    /// Recomputes every recorded head from the events as stored now. Where a checkpoint key is configured, every head
    /// must carry a signature that verifies with it: anyone with the database could record an unsigned one.
    /// </summary>
    public async Task<CheckpointReport> VerifyRecordedAsync(string tenant, CancellationToken ct)
    {
        var recorded = await ListAsync(tenant, ct);
        var report = await VerifyAsync(tenant, recorded.Select(c => (c.Head, (long?)c.Sequence)).ToList(), ct);
        if (!report.Verified)
            return report;
        if (signer.KeyId is not null && recorded.FirstOrDefault(c => !signer.Verifies(tenant, c.Head, c.KeyId, c.Signature)) is { } c)
            return report with
            {
                Verified = false,
                FirstMismatch = new CheckpointMismatch(c.Head, c.Head, c.Sequence,
                    c.Signature is null ? "the head is unsigned, so nothing proves this service recorded it"
                    : c.KeyId == signer.KeyId || signer.EarlierKeys.Any(k => k.KeyId == c.KeyId)
                        ? "the signature does not verify: the recorded head was changed or not made by this service"
                    : $"signed with key {c.KeyId}, which is neither this service's key {signer.KeyId} nor a published earlier one"),
            };
        if (NoteMismatch(tenant, recorded) is { } badNote)
            return report with { Verified = false, FirstMismatch = badNote };
        if (recorded.Count > 0 && (await tree.VerifyAsync(tenant, ct)).Difference is { } difference)
            return report with
            {
                Verified = false,
                FirstMismatch = new CheckpointMismatch(recorded[^1].Head, recorded[^1].Head, recorded[^1].Sequence,
                    $"the stored tree that proofs are served from is not what the events give: {difference}"),
            };
        return report;
    }

    /// <summary>A head whose signed note does not verify with the published key set or does not state this head.</summary>
    private CheckpointMismatch? NoteMismatch(string tenant, IReadOnlyList<RecordedCheckpoint> recorded)
    {
        foreach (var c in recorded.Where(c => c.Note is not null))
        {
            var result = SignedNote.Verify(c.Note!, notes.Keys);
            var body = result.Text is null ? null : CheckpointBody.Parse(result.Text);
            var reason = !result.Verified ? $"the signed note does not verify: {result.Reason}"
                : body is null ? "the signed note is not a checkpoint"
                : body.Origin != notes.Origin(tenant) || body.TreeSize != c.Head.TreeSize || Convert.ToHexStringLower(body.RootHash) != c.Head.RootHash
                    ? "the signed note states another log, size or root than the recorded head" : null;
            if (reason is not null)
                return new CheckpointMismatch(c.Head, c.Head, c.Sequence, reason);
        }
        return null;
    }

    /// <summary>Recomputes each head from the events as stored now (the recorded checkpoints, or heads an auditor kept).</summary>
    public async Task<CheckpointReport> VerifyAsync(string tenant, IReadOnlyList<(TreeHead Head, long? CheckpointSequence)> heads, CancellationToken ct)
    {
        var ordered = heads.OrderBy(h => h.Head.ToSequence).ToList();
        var (actual, eventsRead) = await HeadsAsync(tenant, ordered.Select(h => h.Head.ToSequence).ToList(), ct);
        for (var i = 0; i < ordered.Count; i++)
            if (actual[i] != ordered[i].Head)
                return new CheckpointReport(false, i + 1, eventsRead, new CheckpointMismatch(ordered[i].Head, actual[i], ordered[i].CheckpointSequence,
                    "the events as stored give another tree: an event or run was removed, inserted or changed"));
        return new CheckpointReport(true, ordered.Count, eventsRead, null);
    }

    /// <summary>
    /// The heads at each given sequence (ascending), in one pass over the tenant's events in sequence order. A stream
    /// is the tenant's when its first event's caller is (so a run whose first event is removed drops out, which the
    /// root shows as well).
    /// </summary>
    private async Task<(List<TreeHead> Heads, long EventsRead)> HeadsAsync(string tenant, IReadOnlyList<long> sequences, CancellationToken ct)
    {
        var heads = new List<TreeHead>(sequences.Count);
        if (sequences.Count == 0)
            return (heads, 0);
        await using var command = database.CreateCommand($"""
            SELECT e.seq_id, e.stream_id, e.version, e.headers ->> 'hash'
            FROM sandbox.mt_events e {AuditQueries.StreamOwner}
            WHERE {AuditQueries.OwnedBy} AND e.seq_id <= @to
            ORDER BY e.seq_id
            """);
        command.CommandTimeout = 0;
        command.Parameters.Add(new NpgsqlParameter("tenant", NpgsqlDbType.Text) { Value = tenant });
        command.Parameters.Add(new NpgsqlParameter("to", NpgsqlDbType.Bigint) { Value = sequences[^1] });
        var tree = new MerkleTree();
        long read = 0;
        var next = 0;
        await using (var reader = await command.ExecuteReaderAsync(ct))
        {
            while (await reader.ReadAsync(ct))
            {
                var sequence = reader.GetInt64(0);
                for (; next < sequences.Count && sequences[next] < sequence; next++)
                    heads.Add(new TreeHead(sequences[next], tree.Size, tree.Root));
                tree.Add(MerkleTree.EventLeaf(sequence, reader.GetGuid(1), reader.GetInt64(2), reader.IsDBNull(3) ? null : reader.GetString(3)));
                read++;
            }
        }
        for (; next < sequences.Count; next++)
            heads.Add(new TreeHead(sequences[next], tree.Size, tree.Root));
        return (heads, read);
    }

    /// <summary>
    /// The highest sequence below which nothing can still appear. Sequences are taken before commit, so first read the
    /// highest committed one, then wait until every transaction that may append events (<see cref="AuditQueries.OpenWriters"/>)
    /// open at that moment has ended: any lower sequence still uncommitted belonged to one of them. A transaction gets
    /// its id at its first write, which in Marten's append function follows nextval by microseconds; the pause before
    /// listing the writers covers that gap.
    /// </summary>
    private async Task<long> SettledSequenceAsync(CancellationToken ct)
    {
        await using var connection = await database.OpenConnectionAsync(ct);
        long highest;
        await using (var max = new NpgsqlCommand("SELECT COALESCE(max(seq_id), 0) FROM sandbox.mt_events", connection))
            highest = (long)(await max.ExecuteScalarAsync(ct))!;
        await Task.Delay(WriteGap, ct);
        string[] open;
        await using (var writers = new NpgsqlCommand($"SELECT array(SELECT w.xid::text FROM ({AuditQueries.OpenWriters}) w)", connection))
            open = (string[])(await writers.ExecuteScalarAsync(ct))!;
        if (open.Length == 0)
            return highest;
        var deadline = DateTime.UtcNow + SettleTimeout;
        // Ids are compared as text: a transaction id is not reused within the seconds waited here.
        await using var settled = new NpgsqlCommand(
            $"SELECT NOT EXISTS (SELECT 1 FROM ({AuditQueries.OpenWriters}) w WHERE w.xid::text = ANY(@open))", connection);
        settled.Parameters.Add(new NpgsqlParameter("open", NpgsqlDbType.Array | NpgsqlDbType.Text) { Value = open });
        while (!(bool)(await settled.ExecuteScalarAsync(ct))!)
        {
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException("A transaction that may still append events below the checkpoint is still open; try again in a few seconds.");
            await Task.Delay(20, ct);
        }
        return highest;
    }
}
