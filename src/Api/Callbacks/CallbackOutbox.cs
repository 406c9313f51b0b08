using System.Collections.Concurrent;
using Marten;
using Microsoft.Extensions.Options;
using Npgsql;
using Polly;
using Polly.Retry;
using Sandbox.Audited.Api.Runs;
using Sandbox.Audited.Audit;
using Sandbox.Audited.Audit.Events;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Domain.Startup;
using Sandbox.Audited.Executor;

namespace Sandbox.Audited.Api.Callbacks;

/// <summary>
/// The durable callback outbox (sandbox.callback_outbox). A row is written with the run's write-ahead events, so no callback
/// lives only in one process's memory. Every api node runs this worker: it claims one due row at a time
/// (FOR UPDATE SKIP LOCKED, then a lease), builds the body from the committed record once the run has its terminal event,
/// and sends it with retries and backoff (Polly). Each attempt is recorded on the run (CallbackAttempted) and on the row.
/// A node that stops releases its rows; one that dies gives them up when its lease ends; either way another node, or the
/// same one restarted, carries on from the attempts already made. Delivery is at least once: receivers dedupe on
/// X-Sandbox-Run-Id.
/// </summary>
public sealed partial class CallbackOutbox : BackgroundService
{
    private static readonly string Table = $"{MartenSetup.Schema}.callback_outbox";
    private static readonly string TerminalTypes = string.Join(", ", EventCatalog.Terminal.Order(StringComparer.Ordinal).Select(t => $"'{t}'"));
    private static readonly ResiliencePropertyKey<Claimed> Row = new("sandbox.callback");

    // A sandbox whose removal is not recorded within this time (left to the reaper) no longer holds its run's callback back.
    private static readonly TimeSpan RemovalGrace = TimeSpan.FromSeconds(30);

    private readonly NpgsqlDataSource _db;
    private readonly IDocumentStore _store;
    private readonly EvidenceStore _evidence;
    private readonly CallbackSender _sender;
    private readonly CallbackOptions _options;
    private readonly TimeProvider _clock;
    private readonly ILogger<CallbackOutbox> _logger;
    private readonly ResiliencePipeline<bool> _retry;

    public CallbackOutbox(NpgsqlDataSource db, IDocumentStore store, EvidenceStore evidence, CallbackSender sender, IOptions<CallbackOptions> options,
        IOptions<ExecutorOptions> executor, TimeProvider clock, ILogger<CallbackOutbox> logger)
    {
        _clock = clock;
        _db = db;
        _store = store;
        _evidence = evidence;
        _sender = sender;
        _options = options.Value;
        _logger = logger;
        if (_options.MaxAttempts < 1 || _options.LeaseSeconds <= _options.TimeoutSeconds || _options.MaxConcurrentDeliveries < 1 || _options.PollMilliseconds < 1)
            throw new InvalidSettingException("Callbacks: MaxAttempts, MaxConcurrentDeliveries and PollMilliseconds must be at least 1, and LeaseSeconds longer than TimeoutSeconds.");
        WorkerId = $"{executor.Value.NodeId}/{Guid.NewGuid().ToString("N")[..8]}";
        _retry = new ResiliencePipelineBuilder<bool>()
            .AddRetry(new RetryStrategyOptions<bool>
            {
                // Retry while the receiver has not taken it and attempts are left; a lost lease or a database error ends the claim.
                ShouldHandle = args => ValueTask.FromResult(args.Outcome.Exception is null && !args.Outcome.Result
                    && args.Context.Properties.GetValue(Row, null!).Attempts < _options.MaxAttempts),
                MaxRetryAttempts = int.MaxValue,
                // The backoff follows the run's attempt number, not this claim's: a restarted node does not start again at the shortest wait.
                DelayGenerator = args => ValueTask.FromResult<TimeSpan?>(BackoffAfter(args.Context.Properties.GetValue(Row, null!).Attempts)),
                OnRetry = async args =>
                {
                    var row = args.Context.Properties.GetValue(Row, null!);
                    await ScheduleAsync(row, args.RetryDelay, args.Context.CancellationToken);
                },
            })
            .Build();
    }

    /// <summary>This worker's name in claimed_by: the node id and an instance suffix (two workers of one node stay distinct).</summary>
    public string WorkerId { get; }

    private TimeSpan Lease => TimeSpan.FromSeconds(_options.LeaseSeconds);

    /// <summary>The wait after the given number of failed attempts: InitialBackoffMs, doubled each time, capped.</summary>
    internal TimeSpan BackoffAfter(int failedAttempts) =>
        TimeSpan.FromMilliseconds(Math.Min(_options.InitialBackoffMs * Math.Pow(2, Math.Max(0, failedAttempts - 1)), _options.MaxBackoffSeconds * 1000.0));

    /// <summary>
    /// Queues the run's callback in the same transaction as its write-ahead events (null when the run names none): the row
    /// exists exactly when the run does.
    /// </summary>
    public static Action<IDocumentSession>? Enqueue(Guid runId, string tenant, string? url) => url is null
        ? null
        : session => session.QueueSqlCommand($"INSERT INTO {Table} (run_id, tenant, url) VALUES (?, ?, ?)", runId, tenant, url);

    internal sealed class Claimed(Guid runId, string tenant, string url, int attempts)
    {
        public Guid RunId => runId;
        public string Tenant => tenant;
        public string Url => url;
        public int Attempts { get; set; } = attempts;
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var deliveries = new ConcurrentDictionary<Guid, Task>();
        // Not disposed: a delivery's continuation may release its slot after this method has returned.
        var slots = new SemaphoreSlim(_options.MaxConcurrentDeliveries);
        var failing = false;
        try
        {
            while (true)
            {
                await slots.WaitAsync(stoppingToken);
                Claimed? row = null;
                try
                {
                    row = await ClaimAsync(stoppingToken);
                    if (failing)
                        LogClaimRecovered();
                    failing = false;
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    // Once per outage, not once per poll.
                    if (!failing)
                        LogClaimFailed(e);
                    failing = true;
                }
                if (row is null)
                {
                    slots.Release();
                    await Task.Delay(_options.PollMilliseconds, stoppingToken);
                    continue;
                }
                var delivery = DeliverAsync(row, stoppingToken);
                deliveries[row.RunId] = delivery;
                _ = delivery.ContinueWith(_ =>
                {
                    deliveries.TryRemove(row.RunId, out Task? _);
                    slots.Release();
                }, TaskScheduler.Default);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        // Deliveries end at their next wait once stopping; each gives its row back for the next node.
        await Task.WhenAll(deliveries.Values);
    }

    /// <summary>
    /// Takes one due row that no live lease holds and whose run is settled: it has its terminal event and its sandbox's
    /// removal is recorded (or it never had one, or RemovalGrace passed), so the attempts recorded after it are not raced
    /// by the run's own last events.
    /// </summary>
    internal async Task<Claimed?> ClaimAsync(CancellationToken ct)
    {
        await using var command = _db.CreateCommand($"""
            UPDATE {Table} o SET claimed_by = $1, claim_expires_at = now() + $2
            WHERE o.run_id = (
                SELECT c.run_id FROM {Table} c
                WHERE c.delivered_at IS NULL AND c.given_up_at IS NULL AND c.next_attempt_at <= now()
                  AND (c.claim_expires_at IS NULL OR c.claim_expires_at < now())
                  AND EXISTS (SELECT 1 FROM {MartenSetup.Schema}.mt_events t
                              WHERE t.stream_id = c.run_id AND t.type IN ({TerminalTypes})
                                AND (t.timestamp < now() - $3
                                     OR NOT EXISTS (SELECT 1 FROM {MartenSetup.Schema}.mt_events s WHERE s.stream_id = c.run_id AND s.type = 'sandbox_created')
                                     OR EXISTS (SELECT 1 FROM {MartenSetup.Schema}.mt_events r WHERE r.stream_id = c.run_id AND r.type = 'sandbox_removed')))
                ORDER BY c.next_attempt_at
                LIMIT 1
                FOR UPDATE SKIP LOCKED)
            RETURNING o.run_id, o.tenant, o.url, o.attempts
            """);
        command.Parameters.AddWithValue(WorkerId);
        command.Parameters.AddWithValue(Lease);
        command.Parameters.AddWithValue(RemovalGrace);
        await using var reader = await command.ExecuteReaderAsync(ct);
        return await reader.ReadAsync(ct) ? new Claimed(reader.GetGuid(0), reader.GetString(1), reader.GetString(2), reader.GetInt32(3)) : null;
    }

    /// <summary>Delivers one claimed row: the body from the committed record, then attempts until accepted or none are left.</summary>
    internal async Task DeliverAsync(Claimed row, CancellationToken stoppingToken)
    {
        var context = ResilienceContextPool.Shared.Get(stoppingToken);
        context.Properties.Set(Row, row);
        try
        {
            var (body, stream) = await LoadAsync(row, stoppingToken);
            var delivered = await _retry.ExecuteAsync(async ctx => await AttemptAsync(row, stream, body), context);
            if (!delivered)
                LogGaveUp(row.RunId, row.Url, row.Attempts);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            await ReleaseAsync(row);
        }
        catch (LeaseLostException)
        {
            LogLeaseLost(row.RunId);
        }
        catch (Exception e)
        {
            // The row keeps its lease until it expires, then any node tries again from the attempts recorded.
            LogDeliveryFailed(e, row.RunId);
        }
        finally
        {
            ResilienceContextPool.Shared.Return(context);
        }
    }

    private async Task<(byte[] Body, RunStream Stream)> LoadAsync(Claimed row, CancellationToken ct)
    {
        await using var session = _store.QuerySession();
        var events = await session.Events.FetchStreamAsync(row.RunId, token: ct);
        var summary = RunSummary.Fold(row.RunId, events.Select(e => e.Data));
        var body = CallbackSender.Body(RunView.From(await summary.WithOutputAsync(_evidence, ct)));
        var context = new WriteContext(summary.Subject ?? "", events.Count > 0 ? events[0].CorrelationId : null, Tenant: row.Tenant);
        return (body, new RunStream(_store, row.RunId, context));
    }

    private async Task<bool> AttemptAsync(Claimed row, RunStream stream, byte[] body)
    {
        // Fenced: only while this worker still holds the row does it send, so two workers never deliver it at once.
        await using (var renew = _db.CreateCommand($"UPDATE {Table} SET claim_expires_at = now() + $3 WHERE run_id = $1 AND claimed_by = $2 AND claim_expires_at > now()"))
        {
            renew.Parameters.AddWithValue(row.RunId);
            renew.Parameters.AddWithValue(WorkerId);
            renew.Parameters.AddWithValue(Lease);
            if (await renew.ExecuteNonQueryAsync() != 1)
                throw new LeaseLostException();
        }

        var attempt = row.Attempts + 1;
        var (status, error) = await _sender.SendAsync(row.Tenant, row.Url, row.RunId, attempt, body);
        var delivered = error is null;
        try
        {
            await RunStream.AppendSharedAsync(_store, row.RunId, stream.Context,
                new CallbackAttempted(row.RunId, row.Url, attempt, status, error, delivered, _clock.GetUtcNow()), CancellationToken.None);
        }
        catch (Exception e)
        {
            LogNotRecorded(e, row.RunId, attempt);
        }

        await using var record = _db.CreateCommand($"""
            UPDATE {Table} SET attempts = $3, last_attempt_at = now(), last_status = $4, last_error = $5,
                delivered_at = CASE WHEN $6 THEN now() END,
                given_up_at = CASE WHEN NOT $6 AND $3 >= $7 THEN now() END,
                claim_expires_at = CASE WHEN $6 OR $3 >= $7 THEN NULL ELSE claim_expires_at END
            WHERE run_id = $1 AND claimed_by = $2
            """);
        record.Parameters.AddWithValue(row.RunId);
        record.Parameters.AddWithValue(WorkerId);
        record.Parameters.AddWithValue(attempt);
        record.Parameters.AddWithValue(NpgsqlTypes.NpgsqlDbType.Integer, (object?)status ?? DBNull.Value);
        record.Parameters.AddWithValue(NpgsqlTypes.NpgsqlDbType.Text, (object?)error ?? DBNull.Value);
        record.Parameters.AddWithValue(delivered);
        record.Parameters.AddWithValue(_options.MaxAttempts);
        if (await record.ExecuteNonQueryAsync() != 1)
            throw new LeaseLostException();
        row.Attempts = attempt;
        return delivered;
    }

    /// <summary>Before waiting for the next attempt: when it is due, and a lease that outlasts the wait.</summary>
    private async Task ScheduleAsync(Claimed row, TimeSpan delay, CancellationToken ct)
    {
        await using var command = _db.CreateCommand($"UPDATE {Table} SET next_attempt_at = now() + $3, claim_expires_at = now() + $3 + $4 WHERE run_id = $1 AND claimed_by = $2");
        command.Parameters.AddWithValue(row.RunId);
        command.Parameters.AddWithValue(WorkerId);
        command.Parameters.AddWithValue(delay);
        command.Parameters.AddWithValue(Lease);
        if (await command.ExecuteNonQueryAsync(ct) != 1)
            throw new LeaseLostException();
    }

    /// <summary>Stopping: the row goes back, still due at its next_attempt_at, for whichever node polls first.</summary>
    private async Task ReleaseAsync(Claimed row)
    {
        try
        {
            await using var command = _db.CreateCommand($"UPDATE {Table} SET claimed_by = NULL, claim_expires_at = NULL WHERE run_id = $1 AND claimed_by = $2");
            command.Parameters.AddWithValue(row.RunId);
            command.Parameters.AddWithValue(WorkerId);
            command.CommandTimeout = 5;
            await command.ExecuteNonQueryAsync();
        }
        catch (Exception e)
        {
            // Its lease ends on its own; the row waits at most that long.
            LogDeliveryFailed(e, row.RunId);
        }
    }

    private sealed class LeaseLostException() : Exception("Another worker holds this callback now.");

    [LoggerMessage(Level = LogLevel.Warning, Message = "Looking for due callbacks failed; trying again every poll until the database answers")]
    private partial void LogClaimFailed(Exception e);

    [LoggerMessage(Level = LogLevel.Information, Message = "Looking for due callbacks works again")]
    private partial void LogClaimRecovered();

    [LoggerMessage(Level = LogLevel.Warning, Message = "Run {RunId}: callback delivery stopped; another attempt follows when its lease ends")]
    private partial void LogDeliveryFailed(Exception e, Guid runId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Run {RunId}: this worker's lease on the callback ended; another worker has it")]
    private partial void LogLeaseLost(Guid runId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Run {RunId}: callback attempt {Attempt} could not be recorded on the run")]
    private partial void LogNotRecorded(Exception e, Guid runId, int attempt);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Run {RunId}: callback to {Url} failed after {Attempts} attempts")]
    private partial void LogGaveUp(Guid runId, string url, int attempts);
}
