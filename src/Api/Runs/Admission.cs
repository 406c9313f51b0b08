using System.Collections.Concurrent;
using Microsoft.Extensions.Options;

namespace Sandbox.Audited.Api.Runs;

public sealed class AdmissionOptions
{
    public const string Section = "Admission";

    /// <summary>Sandboxes running at once on this node.</summary>
    public int MaxConcurrentRuns { get; set; } = 8;

    /// <summary>Sandboxes one tenant may run at once.</summary>
    public int MaxConcurrentRunsPerTenant { get; set; } = 6;

    /// <summary>Runs waiting for a slot; beyond this a run is refused at once.</summary>
    public int MaxQueueDepth { get; set; } = 32;

    /// <summary>How long a run may wait for a slot before it is refused.</summary>
    public int MaxQueueWaitMs { get; set; } = 10000;
}

/// <summary>Why a run was not admitted; ShuttingDown refusals are 503 (this node goes away), the rest 429.</summary>
public sealed record AdmissionRefusal(string Reason, int RetryAfterSeconds, bool ShuttingDown = false);

/// <summary>
/// Admission control: a global and a per-tenant ceiling on running sandboxes and a bounded queue with a
/// maximum wait. It answers quickly and always: a slot, or a refusal the client can retry after.
/// </summary>
public sealed class Admission(IOptions<AdmissionOptions> options)
{
    private readonly SemaphoreSlim _global = new(options.Value.MaxConcurrentRuns, options.Value.MaxConcurrentRuns);
    private readonly ConcurrentDictionary<string, SemaphoreSlim> _tenants = new(StringComparer.Ordinal);
    private int _queued;
    private int _running;
    private volatile bool _closed;
    private volatile bool _draining;

    public int Queued => Volatile.Read(ref _queued);

    public int Running => Volatile.Read(ref _running);

    /// <summary>Stops admitting (shutdown); runs already admitted carry on.</summary>
    public void Close()
    {
        _draining = true;
        _closed = true;
    }

    /// <summary>Draining has begun (SIGTERM): readiness says not ready so that load balancers stop sending; admission closes next.</summary>
    public void Drain() => _draining = true;

    public bool Draining => _draining;

    public async Task<(IDisposable? Lease, AdmissionRefusal? Refusal)> EnterAsync(string tenant, CancellationToken ct)
    {
        if (_closed)
            return (null, new AdmissionRefusal("the service is shutting down", 5, ShuttingDown: true));
        if (Interlocked.Increment(ref _queued) > options.Value.MaxQueueDepth)
        {
            Interlocked.Decrement(ref _queued);
            return (null, new AdmissionRefusal($"the run queue is full ({options.Value.MaxQueueDepth} waiting)", 1));
        }
        var tenantGate = _tenants.GetOrAdd(tenant, _ => new SemaphoreSlim(options.Value.MaxConcurrentRunsPerTenant, options.Value.MaxConcurrentRunsPerTenant));
        var deadline = TimeSpan.FromMilliseconds(options.Value.MaxQueueWaitMs);
        var started = DateTime.UtcNow;
        try
        {
            if (!await tenantGate.WaitAsync(deadline, ct))
                return (null, new AdmissionRefusal($"tenant '{tenant}' already runs {options.Value.MaxConcurrentRunsPerTenant} sandboxes", 2));
            var left = deadline - (DateTime.UtcNow - started);
            if (left < TimeSpan.Zero || !await _global.WaitAsync(left, ct))
            {
                tenantGate.Release();
                return (null, new AdmissionRefusal($"all {options.Value.MaxConcurrentRuns} sandbox slots are busy", 2));
            }
            Interlocked.Increment(ref _running);
            return (new Lease(this, tenantGate), null);
        }
        finally
        {
            Interlocked.Decrement(ref _queued);
        }
    }

    private sealed class Lease(Admission admission, SemaphoreSlim tenantGate) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 1)
                return;
            Interlocked.Decrement(ref admission._running);
            admission._global.Release();
            tenantGate.Release();
        }
    }
}
