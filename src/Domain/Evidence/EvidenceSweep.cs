namespace Sandbox.Audited.Domain.Evidence;

/// <summary>How a run's record ends, as far as the contents it may still name are concerned.</summary>
public enum RunEnd
{
    /// <summary>No terminal event yet: in flight, or its outcome waits in a node's journal.</summary>
    None,

    /// <summary>run_completed or run_failed: the outcome is committed; nothing committed later names content for it.</summary>
    Ended,

    /// <summary>run_abandoned: its node's journal may still bring the true outcome (late_outcome_recorded).</summary>
    Abandoned,
}

/// <summary>
/// What the sweep knows about one hold (a run that stored a content before the commit that names it), all read at one
/// moment of the database's clock: the run's record, and the node that holds it (null times: the node never registered;
/// NodeReleasedAt: when an operator released the holds of that node, gone for good: NodeHoldRelease).
/// </summary>
public sealed record HoldFacts(
    string Tenant,
    string Sha256,
    Guid RunId,
    string Node,
    DateTimeOffset HeldAt,
    bool RequestRecorded,
    RunEnd End,
    bool NamedByTheRun,
    DateTimeOffset? NodeStartedAt,
    DateTimeOffset? NodeHeartbeatAt,
    DateTimeOffset? NodeReleasedAt = null);

public abstract record HoldVerdict(string Reason)
{
    public sealed record Keep(string Reason) : HoldVerdict(Reason);

    public sealed record Release(string Reason) : HoldVerdict(Reason);
}

/// <summary>What the sweep knows about one stored content once its releasable holds are released.</summary>
public sealed record ContentFacts(
    string Tenant,
    string Sha256,
    long? Bytes,
    DateTimeOffset StoredAt,
    bool Erased,
    bool Named,
    int HoldsLeft,
    IReadOnlyList<string> Released);

public abstract record ContentVerdict(string Reason)
{
    public sealed record Keep(string Reason) : ContentVerdict(Reason);

    public sealed record Remove(string Reason) : ContentVerdict(Reason);
}

/// <summary>
/// The evidence sweep's decisions (pure): when a run can no longer name a content it stored, and when a content no event
/// names may go. A content that is named is kept for good (events are append-only); the empty content and erased rows
/// (an erasure's record) are never removed; anything younger than the grace is kept.
/// </summary>
public static class EvidenceSweep
{
    public const string EmptySha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// <summary>
    /// Whether a hold may go. A hold younger than the grace stays (a commit may be in flight). A run whose request was never
    /// recorded ran nothing and never will (its write-ahead commit failed): released. A run whose outcome committed can take
    /// no further content: released. Otherwise (in flight, journaled, or abandoned while its node was away) only the node
    /// knows: the hold goes only once that node has heartbeated for a whole grace, since both its start and the hold's last
    /// renewal, without renewing it; a node that is silent, cut off or gone keeps it, however long, unless an operator
    /// released that node's holds (it never returns) after the hold's last renewal and the node has not started since.
    /// </summary>
    public static HoldVerdict DecideHold(HoldFacts hold, DateTimeOffset now, TimeSpan grace)
    {
        if (hold.NamedByTheRun)
            return new HoldVerdict.Release($"named by run {hold.RunId}");
        if (now - hold.HeldAt < grace)
            return new HoldVerdict.Keep($"held by run {hold.RunId} less than the grace ago");
        if (!hold.RequestRecorded)
            return new HoldVerdict.Release($"stored for run {hold.RunId}, whose request was never recorded (its write-ahead commit failed; nothing ran)");
        if (hold.End == RunEnd.Ended)
            return new HoldVerdict.Release($"stored for run {hold.RunId}, which ended without naming it (its outcome commit was refused)");
        // A node that came back after the release renews what it still holds; until its first renewal the rules below protect it.
        if (hold.NodeReleasedAt is { } released && hold.HeldAt <= released && !(hold.NodeStartedAt > released))
            return new HoldVerdict.Release($"stored for run {hold.RunId} on node {hold.Node}, whose holds an operator released at {released.UtcDateTime:yyyy-MM-dd'T'HH:mm:ss'Z'} (the node does not come back)");
        if (hold.NodeStartedAt is not { } started || hold.NodeHeartbeatAt is not { } heartbeat)
            return new HoldVerdict.Keep($"held by run {hold.RunId} on node {hold.Node}, which has not registered");
        var since = started > hold.HeldAt ? started : hold.HeldAt;
        if (heartbeat - since < grace)
            return new HoldVerdict.Keep($"held by run {hold.RunId} on node {hold.Node}, which may still hold it (in flight or in its journal)");
        var ended = hold.End == RunEnd.Abandoned ? "recorded abandoned" : "not ended";
        return new HoldVerdict.Release($"stored for run {hold.RunId} ({ended}), which node {hold.Node} no longer holds");
    }

    /// <summary>
    /// Whether a content may be removed: never the empty content, an erased row or a named content; not while a hold is
    /// left or within the grace of its storing. A content no hold accounts for (stored before holds were kept, or by an
    /// earlier version of a node) goes only when the operator said so (includeUnheld), since its writer may be waiting.
    /// </summary>
    public static ContentVerdict DecideContent(ContentFacts content, DateTimeOffset now, TimeSpan grace, bool includeUnheld)
    {
        if (content.Sha256 == EmptySha256)
            return new ContentVerdict.Keep("the empty content is never removed");
        if (content.Erased)
            return new ContentVerdict.Keep("erased: its row is the erasure's record");
        if (content.Named)
            return new ContentVerdict.Keep("named by an event");
        if (content.HoldsLeft > 0)
            return new ContentVerdict.Keep("still held by a run");
        if (now - content.StoredAt < grace)
            return new ContentVerdict.Keep("stored less than the grace ago");
        if (content.Released.Count == 0)
            return includeUnheld
                ? new ContentVerdict.Remove("named by no event, and no run holds it (stored before holds were kept)")
                : new ContentVerdict.Keep("no hold accounts for it (EvidenceSweep:IncludeUnheld is off)");
        return new ContentVerdict.Remove("named by no event: " + string.Join("; ", content.Released));
    }
}
