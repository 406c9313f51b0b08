namespace Sandbox.Audited.Domain.Runs;

/// <summary>
/// When an executor's worker claims from the run queue. Announced work (a "queued" notification, this node's own enqueue, the
/// listener reconnecting) and the poll always lead to a claim. A slot coming free leads to one only while queued runs may be
/// waiting for it: after a claim that came back short and looked past no queued run, the queue held nothing this node could
/// take, and it stays so until new runs are announced (every executor is woken by each announcement, so a slot freed on each
/// of them would otherwise send each to claim nothing).
/// </summary>
public sealed class ClaimPacing
{
    private readonly Lock _gate = new();
    private long _announcements;
    private bool _mayWait = true;

    /// <summary>Runs were queued: the next claim may find them.</summary>
    public void Announced()
    {
        lock (_gate)
        {
            _announcements++;
            _mayWait = true;
        }
    }

    /// <summary>A slot came free: whether queued runs may be waiting for it.</summary>
    public bool WorthClaimingForFreeSlot
    {
        get
        {
            lock (_gate)
                return _mayWait;
        }
    }

    /// <summary>Taken before a claim is sent and given back with its result: announcements made meanwhile count.</summary>
    public long Mark()
    {
        lock (_gate)
            return _announcements;
    }

    /// <summary>
    /// A claim asked for asked runs and got got; leftBehind: it looked past queued runs (a tenant at its ceiling, or one another
    /// claimer was serving), which a slot coming free (and a tenant's room with it) may let a later claim take.
    /// </summary>
    public void Claimed(long mark, int asked, int got, bool leftBehind)
    {
        lock (_gate)
        {
            if (got >= asked || leftBehind)
                _mayWait = true;
            else if (_announcements == mark)
                _mayWait = false; // drained as far as this node can take, and nothing announced since the claim was sent
        }
    }
}
