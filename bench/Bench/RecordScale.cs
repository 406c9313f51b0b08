using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Marten;
using Npgsql;
using NpgsqlTypes;
using Sandbox.Audited.Audit;
using Sandbox.Audited.Audit.Events;
using Sandbox.Audited.Audit.Migrations;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Audit.Trail;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Merkle;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Bench;

/// <summary>
/// Cost as the record grows (`./sbx bench --scale [events]`): a database of its own seeded with many tenants' runs,
/// then checkpoints (first = catch-up of the whole history, then incremental), inclusion and consistency proofs, and
/// audit queries at that size. Seeding is the documented bulk path: PostgreSQL COPY of rows built the way the write
/// path builds them (Marten's serializer, the event catalog's names, the same hash chain and headers); the first run
/// is written through the real write path and every bulk row is compared with it column by column.
/// </summary>
public static class RecordScale
{
    private const int Tenants = 10;
    private const int Samples = 300;

    public static async Task<int> RunAsync(string adminConnection, string migrations, long events, string outDir)
    {
        var database = "sbx_scale_" + Guid.NewGuid().ToString("N")[..8];
        await ExecuteAsync(adminConnection, $"CREATE DATABASE {database} OWNER sandbox_owner");
        var connection = new NpgsqlConnectionStringBuilder(adminConnection) { Database = database, MaxPoolSize = 20 }.ConnectionString;
        var figures = new Dictionary<string, object>();
        var md = new StringBuilder();
        try
        {
            await MigrationRunner.ApplyAsync(connection, migrations, TextWriter.Null, CancellationToken.None);
            using var store = DocumentStore.For(o => MartenSetup.Configure(o, connection));
            await using var source = NpgsqlDataSource.Create(connection);
            var tenants = Enumerable.Range(0, Tenants).Select(i => $"scale-{i:D2}").ToArray();

            // The reference run, through the real write path: what every bulk row must look like.
            var reference = Guid.CreateVersion7();
            var referenceEvents = AuditCost.Events(reference, DateTimeOffset.UtcNow, tenants[0], "subject-0");
            var stream = new RunStream(store, reference, new WriteContext("subject-0", null, Tenant: tenants[0]));
            await stream.AppendAsync(referenceEvents.Take(2).ToList(), CancellationToken.None);
            await stream.AppendAsync(referenceEvents.Skip(2).ToList(), CancellationToken.None);
            var dotnetTypes = await DotnetTypesAsync(source, reference);

            var runs = (int)(events / 8);
            Console.Error.WriteLine($"[scale] seeding {runs * 8L:N0} events ({runs:N0} runs, {Tenants} tenants) by COPY into {database}");
            var watch = Stopwatch.StartNew();
            await SeedAsync(store, source, tenants, runs, dotnetTypes);
            var seedSeconds = watch.Elapsed.TotalSeconds;
            var differences = await DifferencesFromWritePathAsync(source, reference);
            Console.Error.WriteLine($"[scale] seeded in {seedSeconds:F0} s; columns differing from the write path: {(differences.Count == 0 ? "none" : string.Join(", ", differences))}");
            await ExecuteAsync(connection, "ANALYZE");

            var tree = new AuditTree(source);
            using var signer = new CheckpointSigner(null);
            using var notes = new NoteSigner(null, null, null);
            var checkpoints = new AuditCheckpoints(source, store, signer, notes, tree, TimeProvider.System);
            Caller Auditor(string tenant) => new("bench-auditor", tenant, ["auditor"]);

            watch.Restart();
            var first = await checkpoints.CreateAsync(Auditor(tenants[0]), null, CancellationToken.None);
            var catchUpOne = watch.Elapsed.TotalMilliseconds;
            foreach (var tenant in tenants.Skip(1))
                await checkpoints.CreateAsync(Auditor(tenant), null, CancellationToken.None);
            var catchUpAll = watch.Elapsed.TotalMilliseconds;
            Console.Error.WriteLine($"[scale] first checkpoints (catch-up of the whole history): {catchUpOne:F0} ms for one tenant, {catchUpAll:F0} ms for all");

            // 100 more runs through the real write path, then the incremental checkpoint.
            for (var i = 0; i < 100; i++)
            {
                var runId = Guid.CreateVersion7();
                var more = AuditCost.Events(runId, DateTimeOffset.UtcNow, tenants[i % Tenants], $"subject-{i % 7}");
                var s = new RunStream(store, runId, new WriteContext($"subject-{i % 7}", null, Tenant: tenants[i % Tenants]));
                await s.AppendAsync(more.Take(2).ToList(), CancellationToken.None);
                await s.AppendAsync(more.Skip(2).ToList(), CancellationToken.None);
            }
            // Where an incremental checkpoint's time goes: extending the stored tree, then the rest (waiting for
            // older transactions to settle, root, consistency proof, signing, the append).
            var extension = new List<double>();
            var incremental = new List<double>();
            var settledNow = (long)(await ScalarAsync(source, "SELECT max(seq_id) FROM sandbox.mt_events"))!;
            foreach (var tenant in tenants)
            {
                watch.Restart();
                await tree.ExtendAsync(tenant, settledNow, CancellationToken.None);
                extension.Add(watch.Elapsed.TotalMilliseconds);
                watch.Restart();
                await checkpoints.CreateAsync(Auditor(tenant), null, CancellationToken.None);
                incremental.Add(watch.Elapsed.TotalMilliseconds + extension[^1]);
            }
            var size = await tree.SizeAsync(tenants[0], CancellationToken.None);
            Console.Error.WriteLine($"[scale] incremental checkpoints after 800 new events: p50 {Latency.Of("", incremental).P50:F0} ms; tenant tree size {size:N0}");

            // Incremental verification: 100 more runs after the last checkpoints, then "verify since the last checkpoint".
            for (var i = 0; i < 100; i++)
            {
                var runId = Guid.CreateVersion7();
                var s = new RunStream(store, runId, new WriteContext($"subject-{i % 7}", null, Tenant: tenants[i % Tenants]));
                await s.AppendAsync(AuditCost.Events(runId, DateTimeOffset.UtcNow, tenants[i % Tenants], $"subject-{i % 7}").ToList(), CancellationToken.None);
            }
            var sinceVerification = new IncrementalVerification(source);
            var since = await sinceVerification.SinceLastCheckpointAsync(checkpoints, tenants[0], CancellationToken.None);
            var sinceTimes = new List<double>();
            IncrementalVerification.Result? sinceResult = null;
            for (var i = 0; i < 10; i++)
            {
                watch.Restart();
                sinceResult = await sinceVerification.VerifyAsync(tenants[0], since.From, since.LeavesFrom, CancellationToken.None);
                sinceTimes.Add(watch.Elapsed.TotalMilliseconds);
            }
            if (!sinceResult!.Report.Verified)
                throw new InvalidOperationException("Verification since the last checkpoint fails on an intact record.");

            // Proofs the way the endpoints make them: leaf lookup, root at the size, path hashes from stored subtrees.
            var random = new Random(7);
            var sequences = new List<long>();
            await using (var pick = source.CreateCommand("SELECT seq_id FROM sandbox.audit_tree_leaves WHERE tenant = $1 AND leaf_index = ANY($2)"))
            {
                pick.Parameters.AddWithValue(tenants[0]);
                pick.Parameters.AddWithValue(Enumerable.Range(0, Samples).Select(_ => random.NextInt64(size)).ToArray());
                await using var reader = await pick.ExecuteReaderAsync();
                while (await reader.ReadAsync())
                    sequences.Add(reader.GetInt64(0));
            }
            var inclusion = new List<double>();
            foreach (var sequence in sequences)
            {
                watch.Restart();
                var leaf = (await tree.LeavesAsync(tenants[0], sequence, null, CancellationToken.None))[0];
                var hashes = await tree.HashesAsync(tenants[0], [new LeafRange(0, size), .. TreeProofs.InclusionRanges(leaf.LeafIndex, size)], CancellationToken.None);
                inclusion.Add(watch.Elapsed.TotalMilliseconds);
                if (!InclusionHolds(leaf.LeafIndex, size, leaf.LeafHash, hashes.Skip(1).ToList(), hashes[0]))
                    throw new InvalidOperationException($"The inclusion proof of event {sequence} does not verify.");
            }
            var consistency = new List<double>();
            for (var i = 0; i < Samples; i++)
            {
                var a = random.NextInt64(1, size);
                var b = random.NextInt64(a, size + 1);
                watch.Restart();
                await tree.HashesAsync(tenants[0], [new LeafRange(0, a), new LeafRange(0, b), .. TreeProofs.ConsistencyRanges(a, b)], CancellationToken.None);
                consistency.Add(watch.Elapsed.TotalMilliseconds);
            }

            // Audit queries at this size: runs by subject, events by type, a page deep in the cursor.
            var queries = new AuditQueries(source);
            var maxSequence = (long)(await ScalarAsync(source, "SELECT max(seq_id) FROM sandbox.mt_events"))!;
            async Task<Latency> Time(string name, Func<Task> query)
            {
                var samples = new List<double>();
                for (var i = 0; i < 30; i++)
                {
                    var w = Stopwatch.StartNew();
                    await query();
                    samples.Add(w.Elapsed.TotalMilliseconds);
                }
                return Latency.Of(name, samples);
            }
            var bySubject = await Time("audit query: runs by subject (first page of 100)", () =>
                queries.RunsAsync(new RunFilter(tenants[3], Subject: "subject-5"), 0, 100, CancellationToken.None));
            var byType = await Time("audit query: events by type (first page of 100)", () =>
                queries.EventsAsync(new EventFilter(tenants[3], Type: "sandbox_exited"), 0, 100, CancellationToken.None));
            var deep = await Time("audit query: a page of 100 events deep in the cursor (90%)", () =>
                queries.EventsAsync(new EventFilter(tenants[3]), maxSequence * 9 / 10, 100, CancellationToken.None));

            watch.Restart();
            var stored = await tree.VerifyAsync(tenants[0], CancellationToken.None);
            var storedRate = stored.LeavesChecked / watch.Elapsed.TotalSeconds;

            var floor = await Time("floor: SELECT 1 round trip (the machine's load at this moment)", async () =>
            {
                await using var ping = source.CreateCommand("SELECT 1");
                await ping.ExecuteScalarAsync();
            });
            var latencies = new[]
            {
                floor,
                Latency.Of("inclusion proof (leaf lookup, then root and path in one read)", inclusion),
                Latency.Of("consistency proof (both roots and path in one read)", consistency),
                Latency.Of("incremental checkpoint (80 new events a tenant)", incremental),
                Latency.Of("  of which: stored tree extended by those events", extension),
                bySubject, byType, deep,
                Latency.Of($"verify since the last checkpoint ({sinceResult.Report.EventsChecked} new events of one tenant, {sinceResult.AnchorsRead} anchors)", sinceTimes),
            };
            figures["events"] = runs * 8L + 8;
            figures["tenants"] = Tenants;
            figures["tenantTreeSize"] = size;
            figures["seedSeconds"] = seedSeconds;
            figures["bulkColumnsDifferingFromWritePath"] = differences;
            figures["firstCheckpointMs"] = new { oneTenant = catchUpOne, allTenants = catchUpAll, treeSize = first.Head.TreeSize };
            figures["latency"] = latencies;
            figures["storedTreeVerification"] = new { leaves = stored.LeavesChecked, leavesPerSecond = storedRate, difference = stored.Difference };

            md.AppendLine(CultureInfo.InvariantCulture, $"Record scale, measured {DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm} UTC on {Environment.ProcessorCount} cores: {runs * 8L + 8:N0} events, {Tenants} tenants (tree of one tenant: {size:N0} leaves); seeded by COPY in {seedSeconds:F0} s (columns differing from the write path: {(differences.Count == 0 ? "none" : string.Join(", ", differences))}).");
            md.AppendLine();
            md.AppendLine("| series | samples | p50 ms | p95 ms | p99 ms | mean ms |");
            md.AppendLine("|---|---|---|---|---|---|");
            foreach (var l in latencies)
                md.AppendLine(l.Row());
            md.AppendLine();
            md.AppendLine(CultureInfo.InvariantCulture, $"First checkpoint (catch-up over the whole history, stored tree built): {catchUpOne:F0} ms for one tenant, {catchUpAll:F0} ms for all {Tenants}. Stored tree recomputed from the events: {storedRate:F0} leaves/s ({stored.LeavesChecked:N0} leaves, {(stored.Difference ?? "no difference")}). Verification since the last checkpoint: {sinceResult.Report.EventsChecked / (Latency.Of("", sinceTimes).P50 / 1000):F0} events/s at p50 (rows read: the new events plus one anchor per touched older stream).");
            Directory.CreateDirectory(outDir);
            await File.WriteAllTextAsync(Path.Combine(outDir, "record-scale.json"),
                JsonSerializer.Serialize(figures, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase }));
            await File.WriteAllTextAsync(Path.Combine(outDir, "record-scale.md"), md.ToString());
            Console.WriteLine(md.ToString());
            return differences.Count == 0 && stored.Difference is null ? 0 : 1;
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            if (Environment.GetEnvironmentVariable("SBX_BENCH_KEEP") == "1")
                Console.Error.WriteLine($"[scale] kept database {database} (SBX_BENCH_KEEP=1); drop it when done");
            else
                await ExecuteAsync(adminConnection, $"DROP DATABASE IF EXISTS {database} WITH (FORCE)");
        }
    }

    /// <summary>Marten's .NET type name for each event type, as the write path stored them.</summary>
    private static async Task<Dictionary<string, string?>> DotnetTypesAsync(NpgsqlDataSource source, Guid reference)
    {
        await using var command = source.CreateCommand("SELECT type, mt_dotnet_type FROM sandbox.mt_events WHERE stream_id = $1");
        command.Parameters.AddWithValue(reference);
        var types = new Dictionary<string, string?>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
            types[reader.GetString(0)] = reader.IsDBNull(1) ? null : reader.GetString(1);
        return types;
    }

    /// <summary>Bulk rows through COPY: runs spread over the tenants in turn, 8 events each, chained as the write path chains them.</summary>
    private static async Task SeedAsync(IDocumentStore store, NpgsqlDataSource source, string[] tenants, int runs, Dictionary<string, string?> dotnetTypes)
    {
        var serializer = store.Options.Serializer();
        await using var connection = await source.OpenConnectionAsync();
        long first;
        await using (var reserve = new NpgsqlCommand("SELECT nextval('sandbox.mt_events_sequence')", connection))
            first = (long)(await reserve.ExecuteScalarAsync())!;
        await using (var skip = new NpgsqlCommand($"SELECT setval('sandbox.mt_events_sequence', {first + runs * 8L})", connection))
            await skip.ExecuteNonQueryAsync();

        const int batch = 5_000;
        var start = DateTimeOffset.UtcNow.AddDays(-30);
        var sequence = first + 1;
        for (var done = 0; done < runs; done += batch)
        {
            var count = Math.Min(batch, runs - done);
            var ids = Enumerable.Range(0, count).Select(_ => Guid.CreateVersion7()).ToArray();
            await using (var streams = await connection.BeginBinaryImportAsync(
                "COPY sandbox.mt_streams (id, type, version, timestamp, created, tenant_id, is_archived) FROM STDIN (FORMAT BINARY)"))
            {
                foreach (var id in ids)
                {
                    var at = start.AddMilliseconds(done).UtcDateTime;
                    await streams.WriteRowAsync(CancellationToken.None, id, DBNull.Value, 8L, at, at, "*DEFAULT*", false);
                }
                await streams.CompleteAsync();
            }
            await using var rows = await connection.BeginBinaryImportAsync(
                "COPY sandbox.mt_events (seq_id, id, stream_id, version, data, type, timestamp, tenant_id, mt_dotnet_type, headers, user_name, is_archived) FROM STDIN (FORMAT BINARY)");
            for (var r = 0; r < count; r++)
            {
                var n = done + r;
                var tenant = tenants[n % tenants.Length];
                var subject = $"subject-{n / tenants.Length % 7}";
                var at = start.AddSeconds(n * 2.0);
                var previous = EventChain.Genesis;
                var version = 0L;
                foreach (var e in AuditCost.Events(ids[r], at, tenant, subject))
                {
                    version++;
                    var json = serializer.ToJson(e);
                    var type = EventCatalog.NameOf(e);
                    var hash = EventChain.Hash(previous, ids[r], version, type, json);
                    var headers = JsonSerializer.Serialize(new Dictionary<string, string>
                    {
                        [ChainHeaders.PrevHash] = previous, [ChainHeaders.Hash] = hash, [ChainHeaders.Tenant] = tenant, [ChainHeaders.Canon] = EventChain.CurrentCanon,
                    });
                    await rows.StartRowAsync();
                    await rows.WriteAsync(sequence++, NpgsqlDbType.Bigint);
                    await rows.WriteAsync(Guid.CreateVersion7(), NpgsqlDbType.Uuid);
                    await rows.WriteAsync(ids[r], NpgsqlDbType.Uuid);
                    await rows.WriteAsync(version, NpgsqlDbType.Bigint);
                    await rows.WriteAsync(json, NpgsqlDbType.Jsonb);
                    await rows.WriteAsync(type, NpgsqlDbType.Varchar);
                    await rows.WriteAsync(at.UtcDateTime, NpgsqlDbType.TimestampTz);
                    await rows.WriteAsync("*DEFAULT*", NpgsqlDbType.Varchar);
                    if (dotnetTypes.GetValueOrDefault(type) is { } dotnetType)
                        await rows.WriteAsync(dotnetType, NpgsqlDbType.Varchar);
                    else
                        await rows.WriteNullAsync();
                    await rows.WriteAsync(headers, NpgsqlDbType.Jsonb);
                    await rows.WriteAsync(subject, NpgsqlDbType.Varchar);
                    await rows.WriteAsync(false, NpgsqlDbType.Boolean);
                    previous = hash;
                }
            }
            await rows.CompleteAsync();
            if (done / batch % 20 == 0)
                Console.Error.WriteLine($"[scale]   {(done + count) * 8L:N0} events");
        }
    }

    /// <summary>
    /// Compares a bulk run with the reference run written through the write path: every column that does not carry the
    /// event's own content (ids, sequence, time, data, hashes) must be equal, and each run's chain must verify.
    /// </summary>
    private static async Task<List<string>> DifferencesFromWritePathAsync(NpgsqlDataSource source, Guid reference)
    {
        await using var command = source.CreateCommand("""
            WITH ref AS (SELECT * FROM sandbox.mt_events WHERE stream_id = $1),
                 bulk AS (SELECT * FROM sandbox.mt_events WHERE stream_id = (SELECT stream_id FROM sandbox.mt_events WHERE stream_id <> $1 AND version = 1 ORDER BY seq_id LIMIT 1))
            SELECT c.name FROM ref r JOIN bulk b ON b.version = r.version,
                 LATERAL (VALUES
                    ('type', r.type IS DISTINCT FROM b.type),
                    ('tenant_id', r.tenant_id IS DISTINCT FROM b.tenant_id),
                    ('mt_dotnet_type', r.mt_dotnet_type IS DISTINCT FROM b.mt_dotnet_type),
                    ('correlation_id', r.correlation_id IS DISTINCT FROM b.correlation_id),
                    ('causation_id', r.causation_id IS DISTINCT FROM b.causation_id),
                    ('bdata', r.bdata IS DISTINCT FROM b.bdata),
                    ('is_archived', r.is_archived IS DISTINCT FROM b.is_archived),
                    ('headers (keys)', ARRAY(SELECT jsonb_object_keys(r.headers) ORDER BY 1) IS DISTINCT FROM ARRAY(SELECT jsonb_object_keys(b.headers) ORDER BY 1)),
                    ('data (keys)', ARRAY(SELECT jsonb_object_keys(r.data) ORDER BY 1) IS DISTINCT FROM ARRAY(SELECT jsonb_object_keys(b.data) ORDER BY 1))
                 ) AS c(name, differs)
            WHERE c.differs
            UNION
            SELECT 'mt_streams.' || c.name FROM sandbox.mt_streams r, sandbox.mt_streams b,
                 LATERAL (VALUES ('type', r.type IS DISTINCT FROM b.type), ('version', r.version IS DISTINCT FROM b.version),
                                 ('tenant_id', r.tenant_id IS DISTINCT FROM b.tenant_id), ('is_archived', r.is_archived IS DISTINCT FROM b.is_archived),
                                 ('compacted_version', r.compacted_version IS DISTINCT FROM b.compacted_version)) AS c(name, differs)
            WHERE r.id = $1 AND b.id = (SELECT stream_id FROM sandbox.mt_events WHERE stream_id <> $1 AND version = 1 ORDER BY seq_id LIMIT 1) AND c.differs
            """);
        command.Parameters.AddWithValue(reference);
        var differences = new List<string>();
        await using (var reader = await command.ExecuteReaderAsync())
            while (await reader.ReadAsync())
                differences.Add(reader.GetString(0));
        var chain = await new ChainVerification(source).VerifyAsync("scale-00", new VerifyScope(FromSequence: 0, ToSequence: 20_000), CancellationToken.None);
        if (!chain.Verified)
            differences.Add("hash chain (bulk rows do not verify)");
        return differences;
    }

    // RFC 9162 section 2.1.3.2, to check every measured proof.
    private static bool InclusionHolds(long index, long size, byte[] leafHash, IReadOnlyList<byte[]> path, byte[] root)
    {
        var (fn, sn, r) = (index, size - 1, leafHash);
        foreach (var p in path)
        {
            if (sn == 0)
                return false;
            if ((fn & 1) == 1 || fn == sn)
            {
                r = MerkleTree.NodeHash(p, r);
                while ((fn & 1) == 0 && fn != 0)
                    (fn, sn) = (fn >> 1, sn >> 1);
            }
            else
                r = MerkleTree.NodeHash(r, p);
            (fn, sn) = (fn >> 1, sn >> 1);
        }
        return sn == 0 && r.AsSpan().SequenceEqual(root);
    }

    private static async Task<object?> ScalarAsync(NpgsqlDataSource source, string sql)
    {
        await using var command = source.CreateCommand(sql);
        return await command.ExecuteScalarAsync();
    }

    private static async Task ExecuteAsync(string connectionString, string sql)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }
}
