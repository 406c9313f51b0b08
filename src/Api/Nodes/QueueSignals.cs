using System.Collections.Concurrent;
using Microsoft.Extensions.Options;
using Npgsql;
using Sandbox.Audited.Audit.Queue;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Api.Nodes;

/// <summary>
/// The node's one LISTEN connection: "a run was queued" wakes this node's executor worker, "a run is done" completes the
/// waits of this node's api side, and other nodes' live output reaches this node's stream subscribers. Notifications are
/// wake-ups only: every waiter also polls, so a notification lost while the connection was down delays, never loses.
/// </summary>
public sealed partial class QueueSignals(NpgsqlDataSource dataSource, IOptions<NodeOptions> node, ILogger<QueueSignals> logger) : BackgroundService
{
    private readonly ConcurrentDictionary<Guid, TaskCompletionSource> _done = new();
    private readonly SemaphoreSlim _queued = new(0, 1);

    /// <summary>Another node's live item for a run (see FeedRelay); null when no relay listens.</summary>
    public Action<string>? FeedReceived { get; set; }

    /// <summary>Waits until the run's queue row is done (or the timeout passes); register before the run can finish.</summary>
    public Task DoneAsync(Guid runId) => _done.GetOrAdd(runId, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;

    public void Forget(Guid runId) => _done.TryRemove(runId, out _);

    /// <summary>The run is done: wakes this node's waiter at once (also called in-process, without the round trip).</summary>
    public void Done(Guid runId)
    {
        if (_done.TryRemove(runId, out var waiter))
            waiter.TrySetResult();
    }

    /// <summary>Waits for a "queued" wake-up, a local wake-up, or the poll interval.</summary>
    public async Task WaitForWorkAsync(TimeSpan poll, CancellationToken ct)
    {
        try
        {
            await _queued.WaitAsync(poll, ct);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
        }
    }

    /// <summary>When the worker claims: every announcement does, a slot coming free only while queued runs may wait for one.</summary>
    public ClaimPacing Pacing { get; } = new();

    /// <summary>Runs were queued (a notification, this node's own enqueue, the listener reconnecting): the worker claims.</summary>
    public void WakeWorker()
    {
        Pacing.Announced();
        Release();
    }

    /// <summary>A slot came free: the worker claims only if its last claim may have left runs that this slot could take.</summary>
    public void SlotFreed()
    {
        if (Pacing.WorthClaimingForFreeSlot)
            Release();
    }

    private void Release()
    {
        try
        {
            _queued.Release();
        }
        catch (SemaphoreFullException)
        {
            // already awake
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await using var connection = await dataSource.OpenConnectionAsync(stoppingToken);
                connection.Notification += (_, e) => OnNotification(e.Channel, e.Payload);
                var channels = new List<string> { RunQueue.DoneChannel, FeedRelay.Channel };
                if (node.Value.Executor)
                    channels.Add(RunQueue.QueuedChannel);
                await using (var listen = connection.CreateCommand())
                {
                    listen.CommandText = string.Join(";", channels.Select(c => $"LISTEN {c}"));
                    await listen.ExecuteNonQueryAsync(stoppingToken);
                }
                WakeWorker(); // whatever was queued while not listening
                while (!stoppingToken.IsCancellationRequested)
                    await connection.WaitAsync(stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception e)
            {
                LogListenFailed(e);
                await Task.Delay(TimeSpan.FromSeconds(1), stoppingToken).ContinueWith(_ => { }, TaskScheduler.Default);
            }
        }
    }

    private void OnNotification(string channel, string payload)
    {
        switch (channel)
        {
            case RunQueue.DoneChannel:
                foreach (var runId in RunQueue.RunIdsOf(payload))
                    Done(runId);
                break;
            case RunQueue.QueuedChannel:
                WakeWorker();
                break;
            case FeedRelay.Channel:
                FeedReceived?.Invoke(payload);
                break;
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "The run queue's LISTEN connection failed; reconnecting (waiters poll meanwhile)")]
    private partial void LogListenFailed(Exception e);
}
