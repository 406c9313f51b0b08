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

/// <summary>Why a run was not admitted (429). A draining node refuses new runs before recording them (DrainRefusal), never these.</summary>
public sealed record AdmissionRefusal(string Reason, int RetryAfterSeconds);

/// <summary>
/// Admission control on this node. Runs go through the PostgreSQL run queue: an executor takes a run only when it has a
/// free slot (MaxConcurrentRuns per executor node) and the run's tenant runs fewer than MaxConcurrentRunsPerTenant
/// (counted across the cluster by the queue's claim; for a run a node takes at once, by this node). The api side counts
/// the runs it waits for in the queue (MaxQueueDepth) and refuses a run not claimed within MaxQueueWaitMs.
/// </summary>
public sealed class Admission(IOptions<AdmissionOptions> options)
{
    private readonly SemaphoreSlim _global = new(options.Value.MaxConcurrentRuns, options.Value.MaxConcurrentRuns);
    private readonly ConcurrentDictionary<string, int> _tenants = new(StringComparer.Ordinal);
    private int _queued;
    private int _running;
    private volatile bool _closed;
    private volatile bool _draining;

    public AdmissionOptions Options => options.Value;

    public int Queued => Volatile.Read(ref _queued);

    public int Running => Volatile.Read(ref _running);

    /// <summary>Stops admitting (shutdown); runs already admitted carry on.</summary>
    public void Close()
    {
        _draining = true;
        _closed = true;
        Interlocked.MemoryBarrier(); // pairs with TakeSlot: shutdown reads Running after this
    }

    /// <summary>Draining has begun (SIGTERM): readiness says not ready so that load balancers stop sending; admission closes next.</summary>
    public void Drain() => _draining = true;

    public bool Draining => _draining;

    public bool Closed => _closed;

    /// <summary>A slot at once, or null: the node's slots are all busy, the tenant is at its ceiling here, or the node is closing.</summary>
    public Slot? TryEnter(string tenant)
    {
        if (_closed)
            return null;
        var taken = false;
        _tenants.AddOrUpdate(tenant, _ => { taken = true; return 1; }, (_, n) =>
        {
            taken = n < options.Value.MaxConcurrentRunsPerTenant;
            return taken ? n + 1 : n;
        });
        if (!taken)
            return null;
        if (!TakeSlot())
        {
            _tenants.AddOrUpdate(tenant, 0, (_, n) => n - 1);
            return null;
        }
        return new Slot(this) { Tenant = tenant };
    }

    /// <summary>A free slot of this executor for a run it is about to claim from the queue (the tenant is counted once claimed).</summary>
    public Slot? TrySlot() => !_closed && TakeSlot() ? new Slot(this) : null;

    /// <summary>
    /// Counts the slot before it looks at Closed (Interlocked is a full fence, as is Close's barrier): shutdown, which closes
    /// and then waits for Running to reach 0, either sees this slot held or this call sees the node closed.
    /// </summary>
    private bool TakeSlot()
    {
        if (!_global.Wait(0))
            return false;
        Interlocked.Increment(ref _running);
        if (!_closed)
            return true;
        Interlocked.Decrement(ref _running);
        _global.Release();
        return false;
    }

    /// <summary>The api side waits for a run in the queue; refused at once when MaxQueueDepth runs already wait here.</summary>
    public IDisposable? TryWait()
    {
        if (Interlocked.Increment(ref _queued) > options.Value.MaxQueueDepth)
        {
            Interlocked.Decrement(ref _queued);
            return null;
        }
        return new Waiting(this);
    }

    private sealed class Waiting(Admission admission) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
                Interlocked.Decrement(ref admission._queued);
        }
    }

    /// <summary>An executor slot; once a run is claimed into it, its tenant is counted on this node too.</summary>
    public sealed class Slot(Admission admission) : IDisposable
    {
        private int _disposed;

        /// <summary>The tenant counted on this node for this slot (set when TryEnter counted it).</summary>
        public string? Tenant { get; internal init; }

        private string? _counted;

        public void CountTenant(string tenant)
        {
            _counted = tenant;
            admission._tenants.AddOrUpdate(tenant, 1, (_, n) => n + 1);
        }

        public void Dispose() => Free(signal: true);

        /// <summary>A slot taken for a claim that found nothing: freed without waking the worker, which would only claim nothing again.</summary>
        public void Return() => Free(signal: false);

        private void Free(bool signal)
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 1)
                return;
            Interlocked.Decrement(ref admission._running);
            admission._global.Release();
            if ((Tenant ?? _counted) is { } tenant)
                admission._tenants.AddOrUpdate(tenant, 0, (_, n) => n - 1);
            if (signal)
                admission.SlotFreed?.Invoke();
        }
    }

    /// <summary>A slot came free: the executor's worker looks for queued runs again.</summary>
    public event Action? SlotFreed;
}
