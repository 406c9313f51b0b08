using System.Text.Json;
using Marten;
using Marten.Services;
using Npgsql;
using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Domain.Startup;

namespace Sandbox.Audited.Audit.Queue;

/// <summary>Which roles this process plays (Node:Roles): "api,executor" (the embedded default), "api" or "executor".</summary>
public sealed class NodeOptions
{
    public const string Section = "Node";

    public string Roles { get; set; } = "api,executor";

    /// <summary>
    /// Authenticates live output relayed between nodes (the same on every node). Unset: the random key in sandbox.relay_key,
    /// which only the service's database login may read.
    /// </summary>
    public string? RelayKey { get; set; }

    public bool Api => Has("api");

    public bool Executor => Has("executor");

    private bool Has(string role) =>
        Roles.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Contains(role, StringComparer.OrdinalIgnoreCase);

    /// <summary>Start-up refuses a node without a known role rather than serving nothing.</summary>
    public void Validate()
    {
        var roles = Roles.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (roles.Length == 0 || roles.Any(r => !r.Equals("api", StringComparison.OrdinalIgnoreCase) && !r.Equals("executor", StringComparison.OrdinalIgnoreCase)))
            throw new InvalidSettingException($"Node:Roles '{Roles}' is not valid: use \"api,executor\" (default), \"api\" or \"executor\".");
    }
}

/// <summary>The run queue's timing (Queue:*).</summary>
public sealed class QueueOptions
{
    public const string Section = "Queue";

    /// <summary>How long a claim holds without the executor's heartbeat extending it.</summary>
    public int LeaseSeconds { get; set; } = 30;

    /// <summary>How often a node records that it is alive and extends the leases of its runs.</summary>
    public int HeartbeatSeconds { get; set; } = 5;

    /// <summary>
    /// How long an executor must have been silent (and its lease expired) before its runs are recorded abandoned; longer
    /// than a short PostgreSQL outage, during which no node can heartbeat.
    /// </summary>
    public int AbandonGraceSeconds { get; set; } = 60;
}

/// <summary>The request as an executor needs it: the inputs by digest (their content is in the tenant's evidence store).</summary>
public sealed record QueuedRequest(
    string Language,
    string CodeSha256,
    long CodeBytes,
    string StdinSha256,
    long StdinBytes,
    IReadOnlyList<string> Args,
    IReadOnlyList<FileDigest> Files,
    RequestedLimits Limits,
    string Classification,
    string? Runtime,
    string Isolation);

/// <summary>A run's work order, the queue row's payload: what to run, as decided, for whom.</summary>
public sealed record RunWork(Guid RunId, QueuedRequest Request, PolicyDecision Decision, Caller Caller, string? ImageId, string? CorrelationId);

/// <summary>A claimed run: its work and when it was queued.</summary>
public sealed record ClaimedRun(RunWork Work, string Tenant, DateTimeOffset EnqueuedAt);

/// <summary>What one claim took, and whether it looked past queued runs it could not take (see RunQueue.ClaimReportingAsync).</summary>
public sealed record QueueClaim(IReadOnlyList<ClaimedRun> Runs, bool LeftBehind);

/// <summary>A claimed run whose executor went silent: its lease expired and its node stopped heartbeating beyond the grace.</summary>
public sealed record SilentClaim(Guid RunId, string Tenant, string Node, DateTimeOffset? LastHeartbeat, DateTimeOffset? LeaseUntil = null);

/// <summary>
/// The PostgreSQL run queue (sandbox.run_queue, sandbox.nodes): rows inserted with the write-ahead commit, claimed with
/// FOR UPDATE SKIP LOCKED, finished with the terminal event, and LISTEN/NOTIFY for wake-ups. Coordination only: what
/// happened to a run is in its event stream.
/// </summary>
public sealed class RunQueue(NpgsqlDataSource dataSource) : IAsyncDisposable
{
    /// <summary>NOTIFY'd when runs are queued for any executor (payload: their run ids, comma-separated).</summary>
    public const string QueuedChannel = "sbx_run_queued";

    /// <summary>NOTIFY'd when runs' queue rows leave 'claimed' or 'queued' (payload: their run ids, comma-separated).</summary>
    public const string DoneChannel = "sbx_run_done";

    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    private readonly WakeUps _wakeUps = new(new HeldConnection(dataSource));

    private readonly HeldConnection _claims = new(dataSource);

    public async ValueTask DisposeAsync()
    {
        await _claims.DisposeAsync();
        await _wakeUps.DisposeAsync();
    }

    /// <summary>
    /// A connection kept for statements a node makes one after another (its claims, its wake-ups): taken from the pool once,
    /// so that each pays no pool reset (seven statements on the server) and keeps its prepared plans. These statements leave
    /// nothing behind on the session (autocommit; transaction-level advisory locks only). A caller that finds it in use gets a
    /// pooled connection instead, so concurrent callers never wait for each other; a statement that fails gives it up (the
    /// next caller opens another).
    /// </summary>
    private sealed class HeldConnection(NpgsqlDataSource dataSource) : IAsyncDisposable
    {
        private readonly SemaphoreSlim _free = new(1, 1);
        private NpgsqlConnection? _connection;

        public async Task<T> RunAsync<T>(Func<NpgsqlConnection, Task<T>> work, CancellationToken ct)
        {
            if (_disposed || !_free.Wait(0))
            {
                await using var pooled = await dataSource.OpenConnectionAsync(ct);
                return await work(pooled);
            }
            try
            {
                _connection ??= await dataSource.OpenConnectionAsync(ct);
                return await work(_connection);
            }
            catch
            {
                await GiveUpAsync();
                throw;
            }
            finally
            {
                if (_disposed)
                    await GiveUpAsync();
                _free.Release();
            }
        }

        private async Task GiveUpAsync()
        {
            if (_connection is { } held)
            {
                _connection = null;
                await held.DisposeAsync();
            }
        }

        // A statement in flight keeps the connection until it ends (then it is closed): shutdown never waits for it.
        public async ValueTask DisposeAsync()
        {
            _disposed = true;
            if (!_free.Wait(0))
                return;
            try
            {
                await GiveUpAsync();
            }
            finally
            {
                _free.Release();
            }
        }

        private volatile bool _disposed;
    }

    /// <summary>
    /// Where this process runs, precisely enough that "its pid no longer runs" can be judged by another process: the host
    /// name, this boot and the pid namespace. A container sharing the host's name (host networking), a cloned VM with the
    /// same name or a restarted container differ in boot or namespace, so their holder is watched, never assumed dead.
    /// </summary>
    public static string HostIdentity { get; } = $"{Environment.MachineName}|boot={ReadOrEmpty("/proc/sys/kernel/random/boot_id")}|pidns={PidNamespace()}";

    private static string ReadOrEmpty(string path)
    {
        try
        {
            return File.ReadAllText(path).Trim();
        }
        catch (IOException)
        {
            return "";
        }
        catch (UnauthorizedAccessException)
        {
            return "";
        }
    }

    private static string PidNamespace()
    {
        try
        {
            return new FileInfo("/proc/self/ns/pid").LinkTarget ?? "";
        }
        catch (IOException)
        {
            return "";
        }
        catch (UnauthorizedAccessException)
        {
            return "";
        }
    }

    /// <summary>This process, random at start: recorded with the node's row so that two processes given one node id are told apart.</summary>
    public Guid Instance { get; } = Guid.NewGuid();

    /// <summary>
    /// Adds the queue row to the unit of work that records the run's request and decision, so that both commit or neither.
    /// claimedBy set: this node runs it itself (no hand-over, no wake-up); otherwise executors are woken.
    /// </summary>
    /// <remarks>
    /// Claimed at once only while the tenant has room across the cluster (maxPerTenant, counted under the tenant's lock as a
    /// claim counts): otherwise the commit fails with <see cref="IsTenantAtCeiling"/> and the caller records the run as queued.
    /// </remarks>
    public void Enqueue(IDocumentSession session, RunWork work, string tenant, string requestedBy, string? claimedBy, int leaseSeconds, int maxPerTenant = int.MaxValue)
    {
        var payload = JsonSerializer.Serialize(work, Json);
        if (claimedBy is null)
        {
            session.QueueSqlCommand(
                "INSERT INTO sandbox.run_queue (run_id, tenant, payload, state, requested_by) VALUES (?, ?, ?::jsonb, 'queued', ?)",
                work.RunId, tenant, payload, requestedBy);
            WakeAfterCommit(session, QueuedChannel, work.RunId);
        }
        else
        {
            session.QueueSqlCommand("SELECT sandbox.sbx_room_on_enqueue(?, ?)", tenant, maxPerTenant);
            session.QueueSqlCommand(
                "INSERT INTO sandbox.run_queue (run_id, tenant, payload, state, requested_by, node_id, claimed_at, lease_until) "
                + "VALUES (?, ?, ?::jsonb, 'claimed', ?, ?, now(), now() + make_interval(secs => ?))",
                work.RunId, tenant, payload, requestedBy, claimedBy, leaseSeconds);
        }
    }

    /// <summary>The fast path's claim was refused: the tenant already runs its ceiling of sandboxes across the cluster.</summary>
    public static bool IsTenantAtCeiling(Exception? e)
    {
        for (; e is not null; e = e.InnerException)
            if (e is PostgresException { SqlState: "SBX01" })
                return true;
        return false;
    }

    /// <summary>
    /// Adds "the run is over" to the unit of work that records its terminal event: its claim ends with the record. notify:
    /// another node waits for it (a run this node both recorded and ran has its waiter in-process: no round trip spent on a notification).
    /// </summary>
    public void Finish(IDocumentSession session, Guid runId, bool notify = true)
    {
        session.QueueSqlCommand(
            "UPDATE sandbox.run_queue SET state = 'finished', finished_at = now() WHERE run_id = ? AND state IN ('claimed', 'queued')", runId);
        if (notify)
            WakeAfterCommit(session, DoneChannel, runId);
    }

    /// <summary>Adds "abandoned" to the unit of work that records RunAbandoned; only a claim still held by that node moves.</summary>
    public void MarkAbandoned(IDocumentSession session, Guid runId, string node)
    {
        session.QueueSqlCommand(
            "UPDATE sandbox.run_queue SET state = 'abandoned', finished_at = now() WHERE run_id = ? AND state = 'claimed' AND node_id = ?", runId, node);
        WakeAfterCommit(session, DoneChannel, runId);
    }

    /// <summary>The run ids a wake-up's payload names (one or more, comma-separated).</summary>
    public static IEnumerable<Guid> RunIdsOf(string payload) =>
        payload.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(id => Guid.TryParse(id, out var runId) ? runId : Guid.Empty).Where(id => id != Guid.Empty);

    /// <summary>
    /// The wake-up goes out after the commit, not in it: a commit that sends a notification is serialised with every other
    /// such commit (no group commit), which capped dispatch. Waiters poll, so a wake-up lost between the commit and the
    /// notification (crash, connection failure) only delays.
    /// </summary>
    private void WakeAfterCommit(IDocumentSession session, string channel, Guid runId)
    {
        // One listener per unit of work, so that a commit's wake-ups reach the sender together and leave in as few
        // notifications as their number allows, however fast the sender's round trips are.
        var wakeUp = session.Listeners.OfType<AfterCommitWakeUp>().FirstOrDefault(l => l.Sender == _wakeUps);
        if (wakeUp is null)
            session.Listeners.Add(wakeUp = new AfterCommitWakeUp(_wakeUps));
        wakeUp.Runs.Add((channel, runId));
    }

    private sealed class AfterCommitWakeUp(WakeUps sender) : DocumentSessionListenerBase
    {
        public WakeUps Sender => sender;

        public List<(string Channel, Guid RunId)> Runs { get; } = [];

        public override Task AfterCommitAsync(IDocumentSession session, IChangeSet commit, CancellationToken token)
        {
            // A session may commit again; its next commit wakes for its own runs only.
            sender.Add([.. Runs]);
            Runs.Clear();
            return Task.CompletedTask;
        }
    }

    /// <summary>
    /// Wake-ups merged on their way out: one is sent at once when none is in flight; those of commits made meanwhile leave
    /// together with the next round trip, one notification per channel naming up to 200 runs. A quiet node wakes others as
    /// fast as before, and a busy one sends a few notifications per round trip instead of one per run; the committer never
    /// waits for them.
    /// </summary>
    private sealed class WakeUps(HeldConnection connection) : IAsyncDisposable
    {
        // 200 run ids of 36 characters and their commas stay under NOTIFY's 8000-byte payload.
        private const int RunsPerNotification = 200;

        private readonly Lock _gate = new();
        private List<(string Channel, Guid RunId)> _pending = [];
        private bool _sending;

        public void Add(IReadOnlyCollection<(string Channel, Guid RunId)> wakeUps)
        {
            lock (_gate)
            {
                _pending.AddRange(wakeUps);
                if (_sending)
                    return;
                _sending = true;
            }
            _ = SendAsync();
        }

        public ValueTask DisposeAsync() => connection.DisposeAsync();

        private async Task SendAsync()
        {
            while (true)
            {
                List<(string Channel, Guid RunId)> batch;
                lock (_gate)
                {
                    if (_pending.Count == 0)
                    {
                        _sending = false;
                        return;
                    }
                    batch = _pending;
                    _pending = [];
                }
                var notifications = batch.GroupBy(w => w.Channel)
                    .SelectMany(g => g.Select(w => w.RunId).Distinct().Chunk(RunsPerNotification).Select(ids => (Channel: g.Key, Payload: string.Join(',', ids))))
                    .ToList();
                try
                {
                    await connection.RunAsync(async held =>
                    {
                        await using var command = new NpgsqlCommand("SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS w(c, p)", held);
                        command.Parameters.AddWithValue(notifications.Select(n => n.Channel).ToArray());
                        command.Parameters.AddWithValue(notifications.Select(n => n.Payload).ToArray());
                        return await command.ExecuteNonQueryAsync();
                    }, CancellationToken.None);
                }
                catch (Exception)
                {
                    // Whatever the failure, the records are committed and the waiters' polls find them; the loop must go on.
                }
            }
        }
    }

    /// <summary>
    /// Claims up to maxRuns of the oldest queued runs in one round trip, none for a tenant at its cluster-wide ceiling;
    /// empty when there is none. Oldest first.
    /// </summary>
    public async Task<IReadOnlyList<ClaimedRun>> ClaimAsync(string node, int maxPerTenant, int leaseSeconds, int maxRuns, CancellationToken ct) =>
        (await ClaimReportingAsync(node, maxPerTenant, leaseSeconds, maxRuns, ct)).Runs;

    /// <summary>
    /// As <see cref="ClaimAsync"/>, and whether the claim looked past queued runs (a tenant at its ceiling, or one another
    /// claimer was serving): a claim that came back short without leaving any behind found the queue empty for this node.
    /// </summary>
    public Task<QueueClaim> ClaimReportingAsync(string node, int maxPerTenant, int leaseSeconds, int maxRuns, CancellationToken ct) =>
        _claims.RunAsync(async connection =>
        {
            await using var command = new NpgsqlCommand(
                "SELECT run_id, tenant, payload::text, enqueued_at FROM sandbox.sbx_claim_queued($1, $2, $3, $4) ORDER BY enqueued_at", connection);
            command.Parameters.AddWithValue(node);
            command.Parameters.AddWithValue(maxPerTenant);
            command.Parameters.AddWithValue(leaseSeconds);
            command.Parameters.AddWithValue(maxRuns);
            var claimed = new List<ClaimedRun>();
            var leftBehind = false;
            await using var reader = await command.ExecuteReaderAsync(ct);
            while (await reader.ReadAsync(ct))
            {
                if (reader.IsDBNull(0))
                {
                    leftBehind = true; // the function's marker row
                    continue;
                }
                claimed.Add(new ClaimedRun(JsonSerializer.Deserialize<RunWork>(reader.GetString(2), Json)!, reader.GetString(1),
                    reader.GetFieldValue<DateTimeOffset>(3)));
            }
            return new QueueClaim(claimed, leftBehind);
        }, ct);

    /// <summary>Moves a run still waiting in the queue to 'refused'; false when an executor claimed it first.</summary>
    public async Task<bool> RefuseAsync(Guid runId, CancellationToken ct)
    {
        await using var command = dataSource.CreateCommand(
            "UPDATE sandbox.run_queue SET state = 'refused', finished_at = now() WHERE run_id = $1 AND state = 'queued'");
        command.Parameters.AddWithValue(runId);
        return await command.ExecuteNonQueryAsync(ct) == 1;
    }

    /// <summary>
    /// Puts a run this node claimed but never started back in the queue for any executor (it claimed it as its shutdown's
    /// grace ran out) and wakes the executors; false when the row is no longer this node's claim.
    /// </summary>
    public async Task<bool> ReturnAsync(Guid runId, string node, CancellationToken ct)
    {
        await using var command = dataSource.CreateCommand(
            "WITH returned AS (UPDATE sandbox.run_queue SET state = 'queued', node_id = NULL, claimed_at = NULL, lease_until = NULL "
            + "WHERE run_id = $1 AND state = 'claimed' AND node_id = $2 RETURNING run_id) "
            + "SELECT count(*) FROM returned, LATERAL pg_notify($3, $1::text)");
        command.Parameters.AddWithValue(runId);
        command.Parameters.AddWithValue(node);
        command.Parameters.AddWithValue(QueuedChannel);
        return (long)(await command.ExecuteScalarAsync(ct) ?? 0L) == 1;
    }

    /// <summary>Moves a run still waiting in the queue to 'abandoned' (its api node restarted); false when an executor claimed it.</summary>
    public async Task<bool> AbandonQueuedAsync(Guid runId, CancellationToken ct)
    {
        await using var command = dataSource.CreateCommand(
            "UPDATE sandbox.run_queue SET state = 'abandoned', finished_at = now() WHERE run_id = $1 AND state = 'queued'");
        command.Parameters.AddWithValue(runId);
        return await command.ExecuteNonQueryAsync(ct) == 1;
    }

    /// <summary>The row's state, or null when the run has no queue row (denied runs, runs from before the queue).</summary>
    public async Task<string?> StateAsync(Guid runId, CancellationToken ct)
    {
        await using var command = dataSource.CreateCommand("SELECT state FROM sandbox.run_queue WHERE run_id = $1");
        command.Parameters.AddWithValue(runId);
        return await command.ExecuteScalarAsync(ct) as string;
    }

    /// <summary>
    /// Records that the node is alive and extends the leases of the runs this process holds (running, or their outcome in its
    /// journal): one round trip a tick. A claim the process lost (its execution ended without a record) is not extended, so
    /// the sweeper ends it.
    /// </summary>
    /// <summary>This process took its node id at start (RegisterAsync) and has not lost or released it since.</summary>
    public bool HoldsNodeId { get; private set; }

    public async Task HeartbeatAsync(string node, string roles, int leaseSeconds, IReadOnlyCollection<Guid> held, CancellationToken ct,
        IReadOnlyCollection<Guid>? setAside = null)
    {
        if (!HoldsNodeId)
            return; // not yet taken at start-up (or given back): nothing of the node's is this process's to renew
        await using var batch = dataSource.CreateBatch();
        // Only while the row is this process's: a heartbeat never takes the node id from the process that holds it.
        var beat = new NpgsqlBatchCommand("""
            INSERT INTO sandbox.nodes AS n (node_id, roles, instance_id) VALUES ($1, $2, $3)
            ON CONFLICT (node_id) DO UPDATE SET roles = EXCLUDED.roles, heartbeat_at = now() WHERE n.instance_id = EXCLUDED.instance_id
            """);
        beat.Parameters.AddWithValue(node);
        beat.Parameters.AddWithValue(roles);
        beat.Parameters.AddWithValue(Instance);
        var extend = new NpgsqlBatchCommand(
            "UPDATE sandbox.run_queue SET lease_until = now() + make_interval(secs => $2) WHERE state = 'claimed' AND node_id = $1 AND run_id = ANY($3) "
            + "AND EXISTS (SELECT 1 FROM sandbox.nodes WHERE node_id = $1 AND instance_id = $4)");
        extend.Parameters.AddWithValue(node);
        extend.Parameters.AddWithValue(leaseSeconds);
        extend.Parameters.AddWithValue(held.ToArray());
        extend.Parameters.AddWithValue(Instance);
        batch.BatchCommands.Add(beat);
        batch.BatchCommands.Add(extend);
        // The contents this node's runs rely on stay while it holds them (set-aside journal files too: the operator decides).
        batch.BatchCommands.Add(Evidence.EvidenceHolds.Renewal(node, [.. held, .. setAside ?? []]));
        await batch.ExecuteNonQueryAsync(ct);
        if (beat.RecordsAffected == 0)
        {
            HoldsNodeId = false;
            throw new NodeIdLostException(node);
        }
    }

    /// <summary>
    /// A (re)started node takes its id for this process: its start time is now. Refused (NodeIdInUseException) while another
    /// process holds the id and heartbeated within graceSeconds; a process that stopped cleanly released it, and one that
    /// crashed is taken over once its heartbeat is older than the grace. One statement: two processes starting at once meet
    /// on the row's lock, and the second sees the first's claim.
    /// </summary>
    /// deadHolder: the instance this process knows to be gone (its pid no longer runs on this host), taken over at once.
    /// Returns true when the node's previous process gave the id back (a clean stop) or there was none.
    public async Task<bool> RegisterAsync(string node, string roles, int graceSeconds, CancellationToken ct, Guid? deadHolder = null)
    {
        // The holder may give the id back (or its row go) between the refused upsert and the read of who holds it: then the id
        // is free and the upsert is tried again (each retry means another process took and gave back the id meanwhile).
        while (true)
        {
            if (await TryTakeAsync(node, roles, graceSeconds, deadHolder, ct) is { } released)
            {
                HoldsNodeId = true;
                return released;
            }
            await using var holder = dataSource.CreateCommand(
                "SELECT instance_id, heartbeat_at, extract(epoch FROM now() - heartbeat_at)::float8, host, pid FROM sandbox.nodes WHERE node_id = $1");
            holder.Parameters.AddWithValue(node);
            await using var reader = await holder.ExecuteReaderAsync(ct);
            if (!await reader.ReadAsync(ct) || reader.IsDBNull(0))
                continue;
            throw new NodeIdInUseException(node, reader.GetGuid(0), reader.GetFieldValue<DateTimeOffset>(1), reader.GetDouble(2), graceSeconds)
            {
                Host = reader.IsDBNull(3) ? null : reader.GetString(3),
                Pid = reader.IsDBNull(4) ? null : reader.GetInt32(4),
            };
        }
    }

    /// <summary>Null when another process holds the id; otherwise whether the previous holder had given it back (or there was none).</summary>
    private async Task<bool?> TryTakeAsync(string node, string roles, int graceSeconds, Guid? deadHolder, CancellationToken ct)
    {
        // The CTE reads the row as it was before the upsert: a released id has no instance.
        await using var command = dataSource.CreateCommand("""
            WITH before AS (SELECT instance_id FROM sandbox.nodes WHERE node_id = $1)
            INSERT INTO sandbox.nodes AS n (node_id, roles, instance_id, host, pid) VALUES ($1, $2, $3, $5, $6)
            ON CONFLICT (node_id) DO UPDATE SET roles = EXCLUDED.roles, instance_id = EXCLUDED.instance_id, host = EXCLUDED.host, pid = EXCLUDED.pid,
                started_at = now(), heartbeat_at = now()
            WHERE n.instance_id IS NULL OR n.instance_id = EXCLUDED.instance_id OR n.instance_id = $7
               OR n.heartbeat_at < now() - make_interval(secs => $4)
            RETURNING coalesce((SELECT b.instance_id IS NULL FROM before b), true)
            """);
        command.Parameters.AddWithValue(node);
        command.Parameters.AddWithValue(roles);
        command.Parameters.AddWithValue(Instance);
        command.Parameters.AddWithValue(graceSeconds);
        command.Parameters.AddWithValue(HostIdentity);
        command.Parameters.AddWithValue(Environment.ProcessId);
        command.Parameters.Add(new NpgsqlParameter<Guid?> { TypedValue = deadHolder, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Uuid });
        return await command.ExecuteScalarAsync(ct) as bool?;
    }

    /// <summary>A clean stop gives the node id back at once, so that the node's next process need not wait out the grace.</summary>
    public async Task ReleaseAsync(string node, CancellationToken ct)
    {
        HoldsNodeId = false;
        await using var command = dataSource.CreateCommand("UPDATE sandbox.nodes SET instance_id = NULL WHERE node_id = $1 AND instance_id = $2");
        command.Parameters.AddWithValue(node);
        command.Parameters.AddWithValue(Instance);
        await command.ExecuteNonQueryAsync(ct);
    }

    /// <summary>
    /// Claims whose lease expired and whose node has not heartbeated for graceSeconds (or never registered), or whose lease
    /// went unrenewed for longer than graceSeconds although the node heartbeats (it no longer holds the run).
    /// </summary>
    public async Task<IReadOnlyList<SilentClaim>> SilentClaimsAsync(int graceSeconds, CancellationToken ct)
    {
        await using var command = dataSource.CreateCommand("""
            SELECT q.run_id, q.tenant, q.node_id, n.heartbeat_at, q.lease_until FROM sandbox.run_queue q
            LEFT JOIN sandbox.nodes n ON n.node_id = q.node_id
            WHERE q.state = 'claimed' AND q.lease_until < now()
              AND (n.heartbeat_at IS NULL OR n.heartbeat_at < now() - make_interval(secs => $1)
                   OR q.lease_until < now() - make_interval(secs => $1))
            ORDER BY q.claimed_at LIMIT 100
            """);
        command.Parameters.AddWithValue(graceSeconds);
        var silent = new List<SilentClaim>();
        await using var reader = await command.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
            silent.Add(new SilentClaim(reader.GetGuid(0), reader.GetString(1), reader.GetString(2),
                reader.IsDBNull(3) ? null : reader.GetFieldValue<DateTimeOffset>(3), reader.IsDBNull(4) ? null : reader.GetFieldValue<DateTimeOffset>(4)));
        return silent;
    }

    /// <summary>Runs this node holds or, as the api node that recorded them, still waits for in the queue.</summary>
    public async Task<IReadOnlyList<Guid>> HeldByAsync(string node, CancellationToken ct)
    {
        await using var command = dataSource.CreateCommand("""
            SELECT run_id FROM sandbox.run_queue
            WHERE (state = 'claimed' AND node_id = $1) OR (state = 'queued' AND requested_by = $1)
            """);
        command.Parameters.AddWithValue(node);
        var runs = new List<Guid>();
        await using var reader = await command.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
            runs.Add(reader.GetGuid(0));
        return runs;
    }
}

/// <summary>Another live process already runs as this node: starting would reap its containers and abandon its runs.</summary>
/// <summary>
/// Another process took this process's node id (it thought this one dead: stalled or cut off for longer than the grace).
/// This process must stop acting as the node: its leases are no longer renewed, and it stops without reaping.
/// </summary>
public sealed class NodeIdLostException(string nodeId) : Exception(
    $"Another process took the node id '{nodeId}' while this one still ran (it was stalled or cut off from PostgreSQL for longer than Queue:AbandonGraceSeconds). This process stops; its runs are recorded abandoned by the other.")
{
    public string NodeId => nodeId;
}

public sealed class NodeIdInUseException(string node, Guid instance, DateTimeOffset heartbeatAt, double heartbeatSecondsAgo, int graceSeconds) : Exception(
    $"Executor:NodeId '{node}' is in use by another running process (instance {instance}, last heartbeat {heartbeatSecondsAgo:F0} s ago). "
    + $"Give each process its own Executor:NodeId. If that process has stopped (crash or kill), start this one again once its last "
    + $"heartbeat is older than Queue:AbandonGraceSeconds ({graceSeconds} s).")
{
    public string Node => node;

    /// <summary>The holder's last heartbeat: one that moves on while this process waits belongs to a live process.</summary>
    public DateTimeOffset HeartbeatAt => heartbeatAt;

    public Guid Instance => instance;

    /// <summary>Where the holder runs (null: a process from before these were recorded).</summary>
    public string? Host { get; init; }

    public int? Pid { get; init; }
}
