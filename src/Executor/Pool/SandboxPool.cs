using System.Collections.Concurrent;
using System.Threading.Channels;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Polly;
using Polly.Retry;
using Sandbox.Audited.Executor.Sandboxes;

namespace Sandbox.Audited.Executor.Pool;

/// <summary>
/// A bounded pool of fresh, started sandboxes per profile (runtime, isolation class and container limits), sized per
/// runtime and class by configuration. A pooled sandbox serves exactly one run and is then destroyed; the pool refills
/// in the background and is drained on shutdown. A run whose profile has no pool, or finds it empty, gets a cold one.
/// </summary>
public sealed partial class SandboxPool(
    SandboxFactory factory,
    Docker.DockerEngine docker,
    IOptions<ExecutorOptions> options,
    ILogger<SandboxPool> logger) : BackgroundService
{
    private readonly ConcurrentDictionary<SandboxProfile, Channel<PreparedSandbox>> _pools = new();
    private static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(10);

    private readonly ConcurrentDictionary<string, byte> _warm = new();
    private readonly SemaphoreSlim _refill = new(0);
    private volatile bool _accepting = true;
    private int _refillFailures;

    public int Size => _pools.Values.Sum(c => c.Reader.Count);

    /// <summary>Failed refill attempts so far; while the engine is away they back off instead of spinning.</summary>
    public int RefillFailures => Volatile.Read(ref _refillFailures);

    /// <summary>The containers waiting in the pool right now (each will serve one run, or be drained).</summary>
    public bool IsWarm(string containerId) => _warm.ContainsKey(containerId);

    public int SizeOf(string runtime, string isolation) =>
        _pools.Where(p => p.Key.Runtime == runtime && p.Key.Isolation == isolation).Sum(p => p.Value.Reader.Count);

    /// <summary>Which profiles to keep warm; called when the policy bundle (and so the default limits) changes.</summary>
    public void KeepWarm(IEnumerable<SandboxProfile> profiles)
    {
        var wanted = profiles.Where(p => SizeFor(p) > 0).ToHashSet();
        foreach (var profile in wanted)
            _pools.GetOrAdd(profile, _ => Channel.CreateBounded<PreparedSandbox>(SizeFor(profile)));
        foreach (var stale in _pools.Keys.Where(k => !wanted.Contains(k)).ToList())
            if (_pools.TryRemove(stale, out var channel))
            {
                channel.Writer.TryComplete();
                _ = DrainAsync(channel, CancellationToken.None);
            }
        _refill.Release();
    }

    /// <summary>
    /// A warm sandbox for this profile, or a cold one created now. A warm one is checked first: its supervisor's stream still open
    /// (it said ready when it joined the pool) and the engine still running the container; a dead one is discarded, never handed out.
    /// </summary>
    public async Task<PreparedSandbox> AcquireAsync(SandboxProfile profile, Guid runId, CancellationToken ct) =>
        await TakeWarmAsync(profile, ct) ?? await factory.CreateAsync(profile, runId.ToString("D"), ct);

    /// <summary>
    /// A live warm sandbox for this profile, or null when the pool has none; never creates one. The check only reads from the
    /// engine, so it may run while the run's request is still being recorded: nothing starts in the sandbox until it is handed the run.
    /// </summary>
    public async Task<PreparedSandbox?> TakeWarmAsync(SandboxProfile profile, CancellationToken ct)
    {
        while (_pools.TryGetValue(profile, out var channel) && channel.Reader.TryRead(out var warm))
        {
            // No refill yet: creating a container competes with this run for the CPU. The run calls Replenish when done.
            _warm.TryRemove(warm.ContainerId, out _);
            if (!await IsAliveAsync(warm, ct))
            {
                LogDiscarded(warm.ContainerId);
                _ = factory.DestroyAsync(warm.ContainerId, CancellationToken.None);
                continue;
            }
            return new PreparedSandbox(warm.ContainerId, warm.Profile, warm.Image, warm.ImageId, warm.Settings,
                warm.Stream, warm.Reader, warm.CreatedAt, warm.StartedAt, fromPool: true);
        }
        return null;
    }

    /// <summary>
    /// Puts back a warm sandbox that was taken but never handed a run (its request was not recorded, or its run went to the
    /// queue instead); false when the pool has no room for it any more (full, dropped, or shutting down): the caller removes it.
    /// </summary>
    public bool Return(PreparedSandbox sandbox)
    {
        _warm[sandbox.ContainerId] = 0;
        if (_accepting && _pools.TryGetValue(sandbox.Profile, out var channel) && channel.Writer.TryWrite(sandbox))
            return true;
        _warm.TryRemove(sandbox.ContainerId, out _);
        return false;
    }

    private async Task<bool> IsAliveAsync(PreparedSandbox sandbox, CancellationToken ct)
    {
        if (!sandbox.Reader.StreamAlive)
            return false;
        try
        {
            return (await docker.InspectAsync(sandbox.ContainerId, ct)).State is { Running: true, Paused: false, Restarting: false };
        }
        catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            return false;
        }
    }

    /// <summary>Takes dead sandboxes out of every pool (after an engine restart none of them lives), so the refill rebuilds it.</summary>
    private async Task PruneAsync()
    {
        foreach (var channel in _pools.Values)
        {
            var keep = new List<PreparedSandbox>();
            for (var n = channel.Reader.Count; n > 0 && channel.Reader.TryRead(out var sandbox); n--)
            {
                if (sandbox.Reader.StreamAlive)
                {
                    keep.Add(sandbox);
                    continue;
                }
                _warm.TryRemove(sandbox.ContainerId, out _);
                LogDiscarded(sandbox.ContainerId);
                _ = factory.DestroyAsync(sandbox.ContainerId, CancellationToken.None); // retried off the loop: the engine may still be away
            }
            foreach (var sandbox in keep)
                if (!channel.Writer.TryWrite(sandbox))
                {
                    _warm.TryRemove(sandbox.ContainerId, out _);
                    await factory.DestroyAsync(sandbox.ContainerId, CancellationToken.None);
                }
        }
    }

    /// <summary>Asks for a refill now (a run that took a warm sandbox has finished); otherwise the pool checks every 5 s.</summary>
    public void Replenish() => _refill.Release();

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // The engine may be away: a failed refill backs off (1 s, 2 s, 4 s … 10 s) instead of spinning, and recovers by itself.
        var refill = new ResiliencePipelineBuilder()
            .AddRetry(new RetryStrategyOptions
            {
                // Once stopping, nothing is retried or logged as a failure: a create cut short by the stop fails as a cancellation.
                ShouldHandle = new PredicateBuilder().Handle<Exception>(_ => !stoppingToken.IsCancellationRequested),
                MaxRetryAttempts = int.MaxValue,
                BackoffType = DelayBackoffType.Exponential,
                Delay = TimeSpan.FromSeconds(1),
                MaxDelay = MaxBackoff,
                OnRetry = args =>
                {
                    Interlocked.Increment(ref _refillFailures);
                    LogRefillFailed(args.Outcome.Exception!, args.RetryDelay.TotalSeconds);
                    return ValueTask.CompletedTask;
                },
            })
            .Build();
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await refill.ExecuteAsync(async ct =>
                {
                    await PruneAsync();
                    await FillAsync(ct);
                }, stoppingToken);
                await _refill.WaitAsync(TimeSpan.FromSeconds(5), stoppingToken);
            }
            catch (Exception) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
        }
    }

    private async Task FillAsync(CancellationToken ct)
    {
        foreach (var (profile, channel) in _pools)
        {
            while (_accepting && channel.Reader.Count < SizeFor(profile))
            {
                var sandbox = await factory.CreateAsync(profile, ContainerSpec.PooledRunId, ct);
                sandbox.Reader.Watch();
                _warm[sandbox.ContainerId] = 0;
                // A pool that was dropped, filled meanwhile or completed by shutdown refuses it: destroy, never leak.
                if (!_accepting || !_pools.ContainsKey(profile) || !channel.Writer.TryWrite(sandbox))
                {
                    _warm.TryRemove(sandbox.ContainerId, out _);
                    await factory.DestroyAsync(sandbox.ContainerId, CancellationToken.None);
                    break;
                }
            }
        }
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        _accepting = false;
        await base.StopAsync(cancellationToken);
        foreach (var channel in _pools.Values)
        {
            channel.Writer.TryComplete();
            // Not the shutdown token: a removal given up half-way leaves a container behind (each call has its own deadline).
            await DrainAsync(channel, CancellationToken.None);
        }
    }

    private async Task DrainAsync(Channel<PreparedSandbox> channel, CancellationToken ct)
    {
        while (channel.Reader.TryRead(out var sandbox))
        {
            _warm.TryRemove(sandbox.ContainerId, out _);
            await factory.DestroyAsync(sandbox.ContainerId, ct);
        }
    }

    private int SizeFor(SandboxProfile profile) => options.Value.PoolSizeFor(profile.Runtime, profile.Isolation);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Pooled sandbox {ContainerId} is dead (engine restarted or container gone); discarded")]
    private partial void LogDiscarded(string containerId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Refilling the warm pool failed; retrying in {Seconds} s")]
    private partial void LogRefillFailed(Exception e, double seconds);
}
