using System.Collections.Concurrent;
using System.Threading.Channels;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Sandbox.Audited.Executor.Sandboxes;

namespace Sandbox.Audited.Executor.Pool;

/// <summary>
/// A bounded pool of fresh, started sandboxes per profile (language + container limits). A pooled sandbox
/// serves exactly one run and is then destroyed; the pool refills in the background and is drained on
/// shutdown. A run whose profile has no pool, or finds it empty, gets a cold sandbox instead.
/// </summary>
public sealed partial class SandboxPool(
    SandboxFactory factory,
    IOptions<ExecutorOptions> options,
    ILogger<SandboxPool> logger) : BackgroundService
{
    private readonly ConcurrentDictionary<SandboxProfile, Channel<PreparedSandbox>> _pools = new();
    private readonly SemaphoreSlim _refill = new(0);
    private volatile bool _accepting = true;

    public int Size => _pools.Values.Sum(c => c.Reader.Count);

    public int SizeOf(string language) => _pools.Where(p => p.Key.Language == language).Sum(p => p.Value.Reader.Count);

    /// <summary>Which profiles to keep warm; called when the policy bundle (and so the default limits) changes.</summary>
    public void KeepWarm(IEnumerable<SandboxProfile> profiles)
    {
        if (options.Value.PoolSizePerLanguage <= 0)
            return;
        var wanted = profiles.ToHashSet();
        foreach (var profile in wanted)
            _pools.GetOrAdd(profile, _ => Channel.CreateBounded<PreparedSandbox>(options.Value.PoolSizePerLanguage));
        foreach (var stale in _pools.Keys.Where(k => !wanted.Contains(k)).ToList())
            if (_pools.TryRemove(stale, out var channel))
                _ = DrainAsync(channel, CancellationToken.None);
        _refill.Release();
    }

    /// <summary>A warm sandbox for this profile, or a cold one created now.</summary>
    public async Task<PreparedSandbox> AcquireAsync(SandboxProfile profile, Guid runId, CancellationToken ct)
    {
        if (_pools.TryGetValue(profile, out var channel) && channel.Reader.TryRead(out var warm))
        {
            _refill.Release();
            return new PreparedSandbox(warm.ContainerId, warm.Profile, warm.Image, warm.ImageId, warm.Settings,
                warm.Stream, warm.Reader, warm.CreatedAt, warm.StartedAt, fromPool: true);
        }
        return await factory.CreateAsync(profile, runId.ToString("D"), ct);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await FillAsync(stoppingToken);
                await _refill.WaitAsync(TimeSpan.FromSeconds(5), stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception e)
            {
                // The engine may be down; keep trying without spinning.
                LogRefillFailed(e);
                await Task.Delay(TimeSpan.FromSeconds(2), stoppingToken).ContinueWith(_ => { }, CancellationToken.None);
            }
        }
    }

    private async Task FillAsync(CancellationToken ct)
    {
        foreach (var (profile, channel) in _pools)
        {
            while (_accepting && channel.Reader.Count < options.Value.PoolSizePerLanguage)
            {
                var sandbox = await factory.CreateAsync(profile, ContainerSpec.PooledRunId, ct);
                if (!channel.Writer.TryWrite(sandbox) || !_pools.ContainsKey(profile))
                {
                    await factory.DestroyAsync(sandbox.ContainerId, ct);
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
            await DrainAsync(channel, cancellationToken);
    }

    private async Task DrainAsync(Channel<PreparedSandbox> channel, CancellationToken ct)
    {
        while (channel.Reader.TryRead(out var sandbox))
            await factory.DestroyAsync(sandbox.ContainerId, ct);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Refilling the warm pool failed; retrying")]
    private partial void LogRefillFailed(Exception e);
}
