using System.Text.Json;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using NpgsqlTypes;
using Sandbox.Audited.Audit.Events;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Audit;

/// <summary>
/// Realistic run histories without Docker: the same event records the orchestrator writes, either through
/// RunStream (the real write path) or, for volume, a bulk INSERT with the chain computed here.
/// </summary>
public static class AuditSeed
{
    public static IReadOnlyList<object> RunEvents(Guid runId, string tenant, string subject, DateTimeOffset at,
        string language = "python", string status = RunStatus.Succeeded, string code = "print('hello')", RequestedLimits? requested = null)
    {
        var limits = new RunLimits(5000, 128, 0.5, 64, 65536, 16);
        var denied = status == RunStatus.Denied;
        var events = new List<object>
        {
            new RunRequested(runId, new Caller(subject, tenant, ["runner"]), language, code, Sha256Hex.Of(code), code.Length,
                Sha256Hex.Of(""), 0, [], [], requested ?? RequestedLimits.None, "internal",
                new ClientInfo("127.0.0.1", "audit-test", null, "corr-" + runId.ToString("N")[..8]), "test-node", at),
            new PolicyEvaluated(runId, denied ? "deny" : "allow", "sha256:" + new string('b', 64), ["default"], limits, [],
                denied ? ["denied by test"] : [], at.AddMilliseconds(1)),
        };
        if (denied)
        {
            events.Add(new RunCompleted(runId, RunStatus.Denied, null, 1, "denied by test", at.AddMilliseconds(2)));
            return events;
        }
        events.Add(new SandboxCreated(runId, "c" + runId.ToString("N"), "sbx-python:current", "sha256:" + new string('c', 64), "test-node", true,
            at.AddMilliseconds(2), new SandboxSettings("runc", "none", true, "65534:65534", ["ALL"], ["no-new-privileges"],
                "/tmp:rw,size=16m,nosuid,nodev", 134217728, 134217728, 500000000, 64, ["nofile=256:256"], true,
                new Dictionary<string, string> { ["sbx.run"] = runId.ToString() }), at.AddMilliseconds(3)));
        events.Add(new SandboxStarted(runId, "c" + runId.ToString("N"), at.AddMilliseconds(4)));
        events.Add(new SandboxExited(runId, status == RunStatus.Succeeded ? 0 : 1, null, false, false, false, 12000, 8000, 2000, 9000, at.AddMilliseconds(20)));
        events.Add(new OutputRecorded(runId, new StreamOutput(Sha256Hex.Of("hello\n"), 6, 6, false, "utf-8", "hello\n"),
            new StreamOutput(Sha256Hex.Of(""), 0, 0, false, "utf-8", ""), at.AddMilliseconds(21)));
        events.Add(new RunCompleted(runId, status, status == RunStatus.Succeeded ? 0 : 1, 25, null, at.AddMilliseconds(22)));
        events.Add(new SandboxRemoved(runId, "c" + runId.ToString("N"), SandboxRemoval.Removed, at.AddMilliseconds(30)));
        return events;
    }

    /// <summary>Writes one run through RunStream, the way the orchestrator does (two commits, like the write-ahead rule).</summary>
    public static async Task<Guid> RunAsync(ServiceFixture service, string tenant, string subject,
        string language = "python", string status = RunStatus.Succeeded, string code = "print('hello')", RequestedLimits? requested = null)
    {
        var runId = Guid.CreateVersion7();
        var events = RunEvents(runId, tenant, subject, DateTimeOffset.UtcNow, language, status, code, requested);
        var stream = new RunStream(service.Services.GetRequiredService<IDocumentStore>(), runId,
            new WriteContext(subject, "corr-" + runId.ToString("N")[..8], Tenant: tenant));
        await stream.AppendAsync(events.Take(2).ToList(), CancellationToken.None);
        if (events.Count > 2)
            await stream.AppendAsync(events.Skip(2).ToList(), CancellationToken.None);
        return runId;
    }

    /// <summary>
    /// Bulk-inserts runs (8 events each) with a correct chain, as the superuser, in batches. Legacy: as recorded before
    /// RFC 8785 (hashed in the legacy form, no canon header), with a number the two forms write differently (1e-7).
    /// </summary>
    public static async Task BulkAsync(ServiceFixture service, string tenant, int runs, bool legacy = false)
    {
        var serializer = service.Services.GetRequiredService<IDocumentStore>().Options.Serializer();
        await using var connection = new NpgsqlConnection(service.Database.AdminConnection);
        await connection.OpenAsync();
        const int batchRuns = 1000;
        var start = DateTimeOffset.UtcNow.AddHours(-1);
        for (var done = 0; done < runs; done += batchRuns)
        {
            var streamIds = new List<Guid>();
            var (ids, versions, data, types, times, headers, users) =
                (new List<Guid>(), new List<long>(), new List<string>(), new List<string>(), new List<DateTime>(), new List<string>(), new List<string>());
            for (var r = done; r < Math.Min(runs, done + batchRuns); r++)
            {
                var runId = Guid.CreateVersion7();
                streamIds.Add(runId);
                var subject = "bulk-" + (r % 7);
                var at = start.AddMilliseconds(r);
                var previous = EventChain.Genesis;
                var version = 0L;
                foreach (var e in RunEvents(runId, tenant, subject, at, code: $"print({r})", requested: legacy ? new RequestedLimits(Cpus: 1e-7) : null))
                {
                    version++;
                    var json = serializer.ToJson(e);
                    var type = EventCatalog.NameOf(e);
                    var hash = legacy ? EventChain.LegacyHash(previous, runId, version, type, json) : EventChain.Hash(previous, runId, version, type, json);
                    ids.Add(runId); versions.Add(version); data.Add(json); types.Add(type); times.Add(at.UtcDateTime);
                    var header = new Dictionary<string, string> { ["hash"] = hash, ["prevHash"] = previous, ["tenant"] = tenant };
                    if (!legacy)
                        header["canon"] = EventChain.CurrentCanon;
                    headers.Add(JsonSerializer.Serialize(header));
                    users.Add(subject);
                    previous = hash;
                }
            }
            await using (var streams = new NpgsqlCommand(
                "INSERT INTO sandbox.mt_streams (id, type, version) SELECT s, null, 8 FROM unnest($1::uuid[]) s", connection))
            {
                streams.Parameters.Add(new NpgsqlParameter { Value = streamIds.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Uuid });
                await streams.ExecuteNonQueryAsync();
            }
            await using var insert = new NpgsqlCommand("""
                INSERT INTO sandbox.mt_events (seq_id, id, stream_id, version, data, type, timestamp, headers, user_name)
                SELECT nextval('sandbox.mt_events_sequence'), gen_random_uuid(), s, v, d::jsonb, t, ts, h::jsonb, u
                FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[]) WITH ORDINALITY AS x(s, v, d, t, ts, h, u, n)
                ORDER BY n
                """, connection);
            insert.Parameters.Add(new NpgsqlParameter { Value = ids.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Uuid });
            insert.Parameters.Add(new NpgsqlParameter { Value = versions.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bigint });
            insert.Parameters.Add(new NpgsqlParameter { Value = data.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
            insert.Parameters.Add(new NpgsqlParameter { Value = types.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
            insert.Parameters.Add(new NpgsqlParameter { Value = times.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.TimestampTz });
            insert.Parameters.Add(new NpgsqlParameter { Value = headers.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
            insert.Parameters.Add(new NpgsqlParameter { Value = users.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
            await insert.ExecuteNonQueryAsync();
        }
    }

    /// <summary>Runs SQL as the superuser with the append-only triggers switched off, the way an insider would.</summary>
    public static async Task TamperAsync(ServiceFixture service, string sql, params object[] parameters)
    {
        await using var connection = new NpgsqlConnection(service.Database.AdminConnection);
        await connection.OpenAsync();
        await using var tx = await connection.BeginTransactionAsync();
        await Exec(connection, tx, "ALTER TABLE sandbox.mt_events DISABLE TRIGGER USER");
        foreach (var statement in sql.Split(";\n", StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            await Exec(connection, tx, statement.TrimEnd(';'), parameters);
        await Exec(connection, tx, "ALTER TABLE sandbox.mt_events ENABLE TRIGGER USER");
        await tx.CommitAsync();
    }

    private static async Task Exec(NpgsqlConnection connection, NpgsqlTransaction tx, string sql, params object[] parameters)
    {
        await using var command = new NpgsqlCommand(sql, connection, tx);
        foreach (var p in parameters)
            command.Parameters.AddWithValue(p);
        await command.ExecuteNonQueryAsync();
    }
}
