using System.Text.Json;
using Npgsql;
using NpgsqlTypes;

namespace Sandbox.Audited.Audit.Trail;

/// <summary>Filters of GET /v1/audit/events and /export. Tenant is always set: nobody reads across tenants.</summary>
public sealed record EventFilter(string Tenant, string? Type = null, string? Subject = null, DateTimeOffset? From = null, DateTimeOffset? To = null);

/// <summary>Filters of GET /v1/audit/runs.</summary>
public sealed record RunFilter(
    string Tenant, string? Subject = null, string? Language = null, string? Status = null, string? Decision = null,
    string? CodeSha256 = null, DateTimeOffset? From = null, DateTimeOffset? To = null);

public sealed record Page<T>(IReadOnlyList<T> Items, long? NextCursor);

public sealed record AuditEvent(
    long Sequence, Guid StreamId, long Version, string Type, DateTimeOffset Timestamp, string? Tenant, string? Subject,
    string? User, string? CorrelationId, string? CausationId, string? Hash, string? PrevHash, JsonElement Data);

public sealed record AuditRun(
    long Sequence, Guid RunId, string? Subject, string? Tenant, string? Language, string? Classification, string? CodeSha256,
    string? Decision, string Status, DateTimeOffset RequestedAt, DateTimeOffset? CompletedAt, long? DurationMs);

/// <summary>
/// Audit queries in plain SQL over sandbox.mt_events: what is stored is what is shown, no deserialization.
/// A stream's tenant and subject are its first event's caller (run_requested, request_rejected or
/// audit_accessed). Paging is by global sequence; see <see cref="Settled"/> for why pages are stable.
/// </summary>
public sealed class AuditQueries(NpgsqlDataSource database)
{
    public const int MaxLimit = 500;

    /// <summary>
    /// Sequence numbers are taken before commit, so a slow transaction can commit a lower sequence after a
    /// higher one is visible. A row is listed only once its writing transaction is older than every transaction
    /// still open in this database that may append events (see <see cref="OpenWriters"/>), so a cursor never skips
    /// a row that commits later.
    /// </summary>
    private const string Settled = $"""
        age(e.xmin) > (SELECT COALESCE(max(age(w.xid)), -1) FROM ({OpenWriters}) w)
        """;

    /// <summary>
    /// Transaction ids of open transactions in this database whose login may INSERT into sandbox.mt_events (the
    /// service, the eraser, the owner, superusers), prepared ones included. Any login can take a transaction id and
    /// pg_stat_activity shows every session's, so only writers count: a reader's open transaction cannot hold
    /// back audit reads or checkpoints.
    /// </summary>
    public const string OpenWriters = """
        SELECT a.backend_xid AS xid FROM pg_stat_activity a
        WHERE a.datname = current_database() AND a.backend_xid IS NOT NULL
          AND has_table_privilege(a.usesysid, 'sandbox.mt_events', 'INSERT')
        UNION ALL
        SELECT p.transaction FROM pg_prepared_xacts p JOIN pg_roles r ON r.rolname = p.owner
        WHERE p.database = current_database() AND has_table_privilege(r.oid, 'sandbox.mt_events', 'INSERT')
        """;

    /// <summary>Joins each event e to its stream's first event f, whose caller owns the stream (see <see cref="OwnedBy"/>).</summary>
    public const string StreamOwner = """
        JOIN sandbox.mt_events f ON f.stream_id = e.stream_id AND f.version = 1
        """;

    /// <summary>The stream of e belongs to @tenant (with <see cref="StreamOwner"/>): the one rule for queries, export and checkpoints.</summary>
    public const string OwnedBy = "f.data -> 'caller' ->> 'tenant' = @tenant";

    public const string EventColumns = """
        e.seq_id, e.stream_id, e.version, e.type, e.timestamp, f.data -> 'caller' ->> 'tenant', f.data -> 'caller' ->> 'subject',
        e.user_name, e.correlation_id, e.causation_id, e.headers ->> 'hash', e.headers ->> 'prevHash', e.data::text
        """;

    public static string EventWhere => $"""
        {OwnedBy}
        AND (@type::text IS NULL OR e.type = @type)
        AND (@subject::text IS NULL OR f.data -> 'caller' ->> 'subject' = @subject)
        AND (@from::timestamptz IS NULL OR e.timestamp >= @from)
        AND (@to::timestamptz IS NULL OR e.timestamp < @to)
        """;

    /// <summary>
    /// Events of the tenant in sequence order, through the stored owner of each event (same rule as <see cref="OwnedBy"/>,
    /// kept by a trigger): the (tenant, seq_id) and (tenant, type, seq_id) indexes give a page without walking the record.
    /// </summary>
    public async Task<Page<AuditEvent>> EventsAsync(EventFilter filter, long after, int limit, CancellationToken ct)
    {
        await using var command = database.CreateCommand($"""
            SELECT e.seq_id, e.stream_id, e.version, e.type, e.timestamp, o.tenant, o.subject,
                   e.user_name, e.correlation_id, e.causation_id, e.headers ->> 'hash', e.headers ->> 'prevHash', e.data::text
            FROM sandbox.audit_event_owner o JOIN sandbox.mt_events e ON e.seq_id = o.seq_id
            WHERE o.tenant = @tenant AND o.seq_id > @after
              AND (@type::text IS NULL OR o.type = @type)
              AND (@subject::text IS NULL OR o.subject = @subject)
              AND (@from::timestamptz IS NULL OR e.timestamp >= @from)
              AND (@to::timestamptz IS NULL OR e.timestamp < @to)
              AND {Settled}
            ORDER BY o.seq_id LIMIT @limit
            """);
        AddEventFilter(command, filter);
        command.Parameters.Add(new NpgsqlParameter("after", NpgsqlDbType.Bigint) { Value = after });
        command.Parameters.Add(new NpgsqlParameter("limit", NpgsqlDbType.Integer) { Value = limit + 1 });

        var items = new List<AuditEvent>(Math.Min(limit, MaxLimit) + 1);
        await using var reader = await command.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
        {
            using var data = JsonDocument.Parse(reader.GetString(12));
            items.Add(new AuditEvent(reader.GetInt64(0), reader.GetGuid(1), reader.GetInt64(2), reader.GetString(3),
                reader.GetFieldValue<DateTimeOffset>(4), Text(reader, 5), Text(reader, 6), Text(reader, 7), Text(reader, 8),
                Text(reader, 9), Text(reader, 10), Text(reader, 11), data.RootElement.Clone()));
        }
        return Paged(items, limit, e => e.Sequence);
    }

    public async Task<Page<AuditRun>> RunsAsync(RunFilter filter, long after, int limit, CancellationToken ct)
    {
        await using var command = database.CreateCommand($"""
            SELECT * FROM (
                SELECT e.seq_id, e.stream_id, e.data -> 'caller' ->> 'subject' AS subject, e.data -> 'caller' ->> 'tenant' AS tenant,
                       e.data ->> 'language' AS language, e.data ->> 'classification', e.data ->> 'codeSha256' AS code_sha256,
                       p.data ->> 'decision' AS decision,
                       CASE WHEN t.type = 'run_completed' THEN t.data ->> 'status'
                            WHEN t.type = 'run_failed' THEN 'error'
                            WHEN t.type = 'run_abandoned' THEN 'abandoned'
                            WHEN e.type = 'request_rejected' THEN 'rejected'
                            WHEN p.data ->> 'decision' = 'deny' THEN 'denied'
                            ELSE 'running' END AS status,
                       e.timestamp AS requested_at, t.timestamp, (t.data ->> 'durationMs')::bigint AS duration_ms
                FROM sandbox.mt_events e
                LEFT JOIN LATERAL (SELECT x.data FROM sandbox.mt_events x
                                   WHERE x.stream_id = e.stream_id AND x.type = 'policy_evaluated' ORDER BY x.version LIMIT 1) p ON true
                LEFT JOIN LATERAL (SELECT x.type, x.data, x.timestamp FROM sandbox.mt_events x
                                   WHERE x.stream_id = e.stream_id AND x.type IN ('run_completed', 'run_failed', 'run_abandoned')
                                   ORDER BY x.version LIMIT 1) t ON true
                WHERE e.version = 1 AND e.type IN ('run_requested', 'request_rejected') AND e.seq_id > @after
                  AND e.data -> 'caller' ->> 'tenant' = @tenant
                  AND (@subject::text IS NULL OR e.data -> 'caller' ->> 'subject' = @subject) AND {Settled}
            ) r
            WHERE (@subject::text IS NULL OR r.subject = @subject)
              AND (@language::text IS NULL OR r.language = @language)
              AND (@status::text IS NULL OR r.status = @status)
              AND (@decision::text IS NULL OR r.decision = @decision)
              AND (@code::text IS NULL OR r.code_sha256 = @code)
              AND (@from::timestamptz IS NULL OR r.requested_at >= @from)
              AND (@to::timestamptz IS NULL OR r.requested_at < @to)
            ORDER BY r.seq_id LIMIT @limit
            """);
        Add(command, "tenant", filter.Tenant);
        Add(command, "subject", filter.Subject);
        Add(command, "language", filter.Language);
        Add(command, "status", filter.Status);
        Add(command, "decision", filter.Decision);
        Add(command, "code", filter.CodeSha256?.ToLowerInvariant());
        Add(command, "from", filter.From);
        Add(command, "to", filter.To);
        command.Parameters.Add(new NpgsqlParameter("after", NpgsqlDbType.Bigint) { Value = after });
        command.Parameters.Add(new NpgsqlParameter("limit", NpgsqlDbType.Integer) { Value = limit + 1 });

        var items = new List<AuditRun>();
        await using var reader = await command.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
            items.Add(new AuditRun(reader.GetInt64(0), reader.GetGuid(1), Text(reader, 2), Text(reader, 3), Text(reader, 4),
                Text(reader, 5), Text(reader, 6), Text(reader, 7), reader.GetString(8), reader.GetFieldValue<DateTimeOffset>(9),
                reader.IsDBNull(10) ? null : reader.GetFieldValue<DateTimeOffset>(10), reader.IsDBNull(11) ? null : reader.GetInt64(11)));
        return Paged(items, limit, r => r.Sequence);
    }

    public static void AddEventFilter(NpgsqlCommand command, EventFilter filter)
    {
        Add(command, "tenant", filter.Tenant);
        Add(command, "type", filter.Type);
        Add(command, "subject", filter.Subject);
        Add(command, "from", filter.From);
        Add(command, "to", filter.To);
    }

    private static Page<T> Paged<T>(List<T> items, int limit, Func<T, long> sequence)
    {
        if (items.Count <= limit)
            return new Page<T>(items, null);
        items.RemoveAt(items.Count - 1);
        return new Page<T>(items, sequence(items[^1]));
    }

    private static void Add(NpgsqlCommand command, string name, string? value) =>
        command.Parameters.Add(new NpgsqlParameter(name, NpgsqlDbType.Text) { Value = (object?)value ?? DBNull.Value });

    private static void Add(NpgsqlCommand command, string name, DateTimeOffset? value) =>
        command.Parameters.Add(new NpgsqlParameter(name, NpgsqlDbType.TimestampTz) { Value = (object?)value?.UtcDateTime ?? DBNull.Value });

    private static string? Text(NpgsqlDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : reader.GetString(ordinal);
}
