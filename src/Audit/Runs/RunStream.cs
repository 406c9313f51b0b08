using JasperFx;
using JasperFx.Events;
using Marten;
using Npgsql;
using Polly;
using Polly.Retry;
using Sandbox.Audited.Audit.Events;
using Sandbox.Audited.Domain.Hashing;

namespace Sandbox.Audited.Audit.Runs;

/// <summary>Who and why, stamped on every event of a write as Marten metadata (the tenant as a header).</summary>
public sealed record WriteContext(string User, string? CorrelationId, string? CausationId = null, string? Tenant = null);

/// <summary>
/// The single writer of one run's stream. It keeps the stream's version and last hash, so every append
/// extends the hash chain and is guarded by optimistic concurrency on the expected version.
/// </summary>
public sealed class RunStream(IDocumentStore store, Guid runId, WriteContext context)
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private long _version;
    private string _lastHash = EventChain.Genesis;

    public Guid RunId => runId;

    public long Version => _version;

    public WriteContext Context => context;

    /// <summary>Resumes the chain of an existing stream from its last event (e.g. to record RunAbandoned after a crash).</summary>
    public static async Task<RunStream> ResumeAsync(IDocumentStore store, Guid runId, WriteContext context, CancellationToken ct)
    {
        // One read of the tail, its version and hash: all an append needs (an executor resumes every run another node recorded).
        // On the commits' connections when they are prepared: no DISCARD ALL, and the statement planned once per connection.
        var prepared = GroupCommit.For(store).Connections;
        await using var connection = prepared is null ? store.Storage.Database.CreateConnection() : prepared.CreateConnection();
        await connection.OpenAsync(ct);
        try
        {
            await using var command = new NpgsqlCommand(
                $"SELECT version, headers ->> '{ChainHeaders.Hash}' FROM {MartenSetup.Schema}.mt_events WHERE stream_id = $1 ORDER BY version DESC LIMIT 1", connection);
            command.Parameters.AddWithValue(runId);
            await using var reader = await command.ExecuteReaderAsync(ct);
            var stream = new RunStream(store, runId, context);
            if (await reader.ReadAsync(ct))
            {
                stream._version = reader.GetInt64(0);
                stream._lastHash = reader.IsDBNull(1) ? EventChain.Genesis : reader.GetString(1);
            }
            return stream;
        }
        catch (Exception e) when (prepared is not null)
        {
            Prepared.AfterFailure(prepared, connection, e);
            throw;
        }
    }

    /// <summary>A stream that continues the chain after the last of the events read (a new stream when there are none).</summary>
    private static RunStream After(IDocumentStore store, Guid runId, WriteContext context, IReadOnlyList<IEvent> read)
    {
        var stream = new RunStream(store, runId, context);
        if (read.Count > 0)
        {
            stream._version = read[^1].Version;
            stream._lastHash = read[^1].GetHeader(ChainHeaders.Hash)?.ToString() ?? EventChain.Genesis;
        }
        return stream;
    }

    /// <summary>
    /// Resumes the run's stream for a writer that may end it (a sweeper, recovery), or null when it holds a terminal event
    /// anywhere (not only at its tail: other events, such as callback attempts, may follow it). One read gives both, so a
    /// terminal event committed before it is seen here and one committed after it fails the append at this version.
    /// </summary>
    public static async Task<RunStream?> ResumeUnlessEndedAsync(IDocumentStore store, Guid runId, WriteContext context, CancellationToken ct)
    {
        await using var session = store.QuerySession();
        var events = await session.Events.FetchStreamAsync(runId, token: ct);
        return events.Any(e => EventCatalog.Terminal.Contains(e.EventTypeName)) ? null : After(store, runId, context, events);
    }

    /// <summary>
    /// Appends to a stream that several writers share (the access log, policy activations): resume from the tail,
    /// append with the expected version, and when another writer got there first, resume again and retry.
    /// </summary>
    public static Task AppendSharedAsync(IDocumentStore store, Guid streamId, WriteContext context, object @event, CancellationToken ct,
        Action<IDocumentSession>? alongside = null) =>
        SharedWriters.ExecuteAsync(async token =>
        {
            // Alone: several writers share this stream and meet on its version, which would send a shared commit back often.
            var stream = await ResumeAsync(store, streamId, context, token);
            await stream.AppendAsync([@event], grouped: false, token, alongside);
        }, ct).AsTask();

    // Writers that lost the race to the same version retry after a short, jittered pause so that they do not collide again.
    private static readonly ResiliencePipeline SharedWriters = new ResiliencePipelineBuilder()
        .AddRetry(new RetryStrategyOptions
        {
            ShouldHandle = new PredicateBuilder().Handle<Exception>(IsConflict),
            MaxRetryAttempts = 7,
            BackoffType = DelayBackoffType.Linear,
            Delay = TimeSpan.FromMilliseconds(10),
            UseJitter = true,
        })
        .Build();

    /// <summary>Another writer appended at the expected version first (or a commit this writer saw fail went through).</summary>
    public static bool IsConflict(Exception? e)
    {
        for (; e is not null; e = e.InnerException)
            if (e is ConcurrencyException or EventStreamUnexpectedMaxEventIdException or ExistingStreamIdCollisionException
                or Marten.Exceptions.ExistingStreamIdCollisionException or PostgresException { SqlState: PostgresErrorCodes.UniqueViolation })
                return true;
        return false;
    }

    /// <summary>
    /// Appends and commits the events in one transaction; nothing is half-written. Whatever alongside adds to the session (the
    /// run queue row, a callback's outbox row) commits or fails with them. Other runs' appends made at the same moment may share
    /// the transaction (GroupCommit); this call returns only once it committed, and fails only for this stream's own reasons
    /// (or when the commit's outcome is unknown). alongside may be called twice, each time on a fresh session: it must only add
    /// to the session.
    /// </summary>
    public Task AppendAsync(IReadOnlyList<object> events, CancellationToken ct, Action<IDocumentSession>? alongside = null) =>
        AppendAsync(events, grouped: true, ct, alongside);

    private async Task AppendAsync(IReadOnlyList<object> events, bool grouped, CancellationToken ct, Action<IDocumentSession>? alongside = null)
    {
        await _gate.WaitAsync(ct);
        try
        {
            var serializer = store.Options.Serializer();
            var version = _version;
            var previous = _lastHash;
            var chained = new (object Data, string PrevHash, string Hash)[events.Count];
            for (var i = 0; i < events.Count; i++)
            {
                version++;
                var hash = EventChain.Hash(previous, runId, version, EventCatalog.NameOf(events[i]), serializer.ToJson(events[i]));
                chained[i] = (events[i], previous, hash);
                previous = hash;
            }
            var starts = _version == 0;

            // Who and why on each event rather than on the session: a shared session carries other runs' events too.
            void Write(IDocumentSession session)
            {
                var wrapped = new IEvent[chained.Length];
                for (var i = 0; i < chained.Length; i++)
                {
                    var @event = EventFor(chained[i].Data);
                    @event.SetHeader(ChainHeaders.PrevHash, chained[i].PrevHash);
                    @event.SetHeader(ChainHeaders.Hash, chained[i].Hash);
                    @event.SetHeader(ChainHeaders.Canon, EventChain.CurrentCanon);
                    if (context.Tenant is not null)
                        @event.SetHeader(ChainHeaders.Tenant, context.Tenant);
                    @event.CorrelationId = context.CorrelationId;
                    @event.CausationId = context.CausationId;
                    @event.UserName = context.User;
                    wrapped[i] = @event;
                }
                if (starts)
                    session.Events.StartStream(runId, wrapped);
                else
                    session.Events.Append(runId, version, wrapped);
                alongside?.Invoke(session);
            }

            if (grouped)
                await GroupCommit.For(store).CommitAsync(runId, Write, ct);
            else
            {
                // Shared streams (the access log, policy activations) meet on their versions often: Marten's own connections.
                await using var session = store.LightweightSession();
                Write(session);
                await session.SaveChangesAsync(ct);
            }

            _version = version;
            _lastHash = previous;
        }
        finally
        {
            _gate.Release();
        }
    }

    public Task AppendAsync(object @event, CancellationToken ct) => AppendAsync([@event], ct);

    private static IEvent EventFor(object data) =>
        (IEvent)Activator.CreateInstance(typeof(Event<>).MakeGenericType(data.GetType()), data)!;
}

public static class ChainHeaders
{
    public const string Hash = "hash";
    public const string PrevHash = "prevHash";

    /// <summary>The canonical form the hash was computed over ("jcs", RFC 8785); absent on events from before it (the legacy form).</summary>
    public const string Canon = "canon";

    /// <summary>Not hashed (it is inside the data too): lets a stream be scoped to its tenant even if its first event is gone.</summary>
    public const string Tenant = "tenant";
}
