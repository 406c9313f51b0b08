using System.Runtime.CompilerServices;
using JasperFx;
using JasperFx.Events;
using Marten;
using Npgsql;

namespace Sandbox.Audited.Audit.Runs;

/// <summary>
/// Commits of different runs' streams made at the same moment share one transaction: one session, one BEGIN/COMMIT and one
/// fsync for all of them, each writer released only once that commit succeeded. A commit made while none is in flight goes
/// alone at once, so a quiet node waits for nobody; those made while InFlight commits run leave together with the next.
/// </summary>
/// <remarks>
/// Each member's writes are its own: when the shared transaction is refused by the server (one member's conflict, a tenant
/// at its ceiling, a deadlock between two groups), nothing of it committed, and every member is committed again alone, so
/// that each gets its own outcome and one member's refusal fails no other. A failure that leaves the outcome unknown (the
/// connection broke) is every member's failure, as it would have been alone; an append retried after such a failure meets
/// its stream's expected version, so nothing is recorded twice.
/// </remarks>
public sealed class GroupCommit
{
    // Enough for a busy node's commits of one round trip; a group this size is still one small transaction.
    internal const int MaxMembers = 32;

    /// <summary>Commits running at once per store (default 2): a group forms while these are in flight.</summary>
    public int InFlight { get; set; } = 2;

    private static readonly ConditionalWeakTable<IDocumentStore, GroupCommit> Groups = new();

    private readonly IDocumentStore _store;
    private readonly Lock _gate = new();
    private readonly List<Member> _pending = [];
    private int _running;

    private GroupCommit(IDocumentStore store) => _store = store;

    /// <summary>The group commit of this document store (one per store and process).</summary>
    public static GroupCommit For(IDocumentStore store) => Groups.GetValue(store, s => new GroupCommit(s));

    /// <summary>
    /// Where the commits' connections come from: null, the store's own; otherwise a data source with automatic preparation
    /// (<see cref="Prepared"/>), whose connection forgets its prepared statements after a failed commit.
    /// </summary>
    public NpgsqlDataSource? Connections { get; set; }

    /// <summary>Off: every commit goes alone at once, as before group commits (for comparisons).</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>Commits so far in a transaction of their own, those shared by two or more members, and those members (for tests and figures).</summary>
    public long Alone => Interlocked.Read(ref _alone);

    public long Shared => Interlocked.Read(ref _shared);

    public long SharedMembers => Interlocked.Read(ref _sharedMembers);

    /// <summary>Shared commits that did not commit and whose members were each committed again alone.</summary>
    public long Retried => Interlocked.Read(ref _retried);

    private long _alone, _shared, _sharedMembers, _retried;

    /// <summary>
    /// Commits write (what one stream's writer adds to a session) with whatever else is being committed now. write may be
    /// called more than once, each time on a fresh session (a shared commit the server refused is retried alone): it must
    /// only add to the session. Cancellation counts only while the member waits for a group; once its commit started it
    /// runs to its end, so that a writer never mistakes a committed append for a failed one.
    /// </summary>
    public Task CommitAsync(Guid streamId, Action<IDocumentSession> write, CancellationToken ct)
    {
        var member = new Member(streamId, write);
        if (!Enabled)
        {
            _ = CommitAloneAsync(member, ct);
            return member.Done.Task;
        }
        bool lead;
        lock (_gate)
        {
            _pending.Add(member);
            lead = _running < InFlight;
            if (lead)
                _running++;
        }
        if (ct.CanBeCanceled)
            member.Cancellation = ct.Register(() =>
            {
                lock (_gate)
                    if (!_pending.Remove(member))
                        return; // taken into a commit: it completes with it
                member.Done.TrySetCanceled(ct);
            });
        if (lead)
            _ = RunAsync();
        return member.Done.Task;
    }

    private async Task RunAsync()
    {
        while (true)
        {
            List<Member> group;
            lock (_gate)
            {
                if (_pending.Count == 0)
                {
                    _running--;
                    return;
                }
                group = Take();
            }
            foreach (var member in group)
                member.Cancellation.Dispose();
            if (group.Count == 1)
                await CommitAloneAsync(group[0]);
            else
                await CommitTogetherAsync(group);
        }
    }

    // Oldest first; one member per stream: two writers of one stream meet on its expected version, each in its own commit.
    private List<Member> Take()
    {
        var group = new List<Member>(Math.Min(_pending.Count, MaxMembers));
        var streams = new HashSet<Guid>();
        for (var i = 0; i < _pending.Count && group.Count < MaxMembers; i++)
        {
            if (!streams.Add(_pending[i].StreamId))
                continue;
            group.Add(_pending[i]);
            _pending.RemoveAt(i--);
        }
        return group;
    }

    private async Task CommitAloneAsync(Member member) => await CommitAloneAsync(member, CancellationToken.None);

    private async Task CommitAloneAsync(Member member, CancellationToken ct)
    {
        try
        {
            await SaveAsync(member.Write, ct);
            Interlocked.Increment(ref _alone);
            member.Done.TrySetResult();
        }
        catch (Exception e)
        {
            member.Done.TrySetException(e is WriteFailedException ? e.InnerException! : e);
        }
    }

    private async Task CommitTogetherAsync(List<Member> group)
    {
        if (await TryTogetherAsync(group) is { } failure)
        {
            foreach (var member in group)
                member.Done.TrySetException(failure);
            return;
        }
        if (group.All(m => m.Done.Task.IsCompleted))
            return;
        // Nothing of the group committed (a writer failed before anything was sent, or the server refused the transaction):
        // each member again on its own, so that only the one at fault fails.
        Interlocked.Increment(ref _retried);
        await Task.WhenAll(group.Select(CommitAloneAsync));
    }

    // Null: committed (every member released) or to be retried alone; otherwise the failure every member shares.
    private async Task<Exception?> TryTogetherAsync(List<Member> group)
    {
        try
        {
            await SaveAsync(session =>
            {
                foreach (var member in group)
                    member.Write(session);
            }, CancellationToken.None);
        }
        catch (WriteFailedException)
        {
            return null;
        }
        catch (Exception e) when (RefusedByServer(e))
        {
            return null;
        }
        catch (Exception e)
        {
            return e;
        }
        Interlocked.Increment(ref _shared);
        Interlocked.Add(ref _sharedMembers, group.Count);
        foreach (var member in group)
            member.Done.TrySetResult();
        return null;
    }

    /// <summary>One session: write adds to it (its failure is a <see cref="WriteFailedException"/>: nothing was sent), then it commits.</summary>
    private async Task SaveAsync(Action<IDocumentSession> write, CancellationToken ct)
    {
        var source = Connections;
        var connection = source is null ? null : await source.OpenConnectionAsync(ct);
        var session = connection is null ? _store.LightweightSession() : _store.LightweightSession(Marten.Services.SessionOptions.ForConnection(connection));
        try
        {
            try
            {
                write(session);
            }
            catch (Exception e)
            {
                throw new WriteFailedException(e);
            }
            await session.SaveChangesAsync(ct);
        }
        catch (Exception e) when (e is not WriteFailedException && source is not null && connection is not null)
        {
            Prepared.AfterFailure(source, connection, e);
            throw;
        }
        finally
        {
            await session.DisposeAsync();
            if (connection is not null)
                await connection.DisposeAsync();
        }
    }

    private sealed class WriteFailedException(Exception inner) : Exception(inner.Message, inner);

    /// <summary>
    /// The server answered the transaction with an error, so it rolled back: a statement refused (conflict, a tenant at its
    /// ceiling, deadlock), as opposed to a broken connection, whose commit may or may not have happened.
    /// </summary>
    internal static bool RefusedByServer(Exception? e)
    {
        for (; e is not null; e = e.InnerException)
            if (e is PostgresException or ConcurrencyException or EventStreamUnexpectedMaxEventIdException or JasperFx.Events.ExistingStreamIdCollisionException
                or Marten.Exceptions.ExistingStreamIdCollisionException)
                return true;
        return false;
    }

    private sealed class Member(Guid streamId, Action<IDocumentSession> write)
    {
        public Guid StreamId => streamId;
        public Action<IDocumentSession> Write => write;
        public TaskCompletionSource Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public CancellationTokenRegistration Cancellation { get; set; }
    }
}
