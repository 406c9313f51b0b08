namespace Sandbox.Audited.Domain.Runs;

/// <summary>
/// One event as the journal worker sees it: its recorded type name, its data, and its JSON as the store serializes it (two
/// events are the same fact when their JSON is the same; records holding lists do not compare equal by value).
/// </summary>
public sealed record JournalEvent(string Type, object Data, string Json);

/// <summary>
/// A run's outcome as a node's journal file holds it: the run and tenant it names, its events in order, and the SHA-256 of
/// each content kept beside them (hashed from the kept bytes themselves, not taken from the file).
/// </summary>
public sealed record JournalEntry(Guid RunId, string? Tenant, IReadOnlyList<JournalEvent> Events, IReadOnlyList<string> ContentSha256s);

/// <summary>What the journal worker does with one file.</summary>
public abstract record JournalVerdict
{
    private JournalVerdict()
    {
    }

    /// <summary>
    /// Commit these events (those not in the stream yet; for an abandoned run its terminal event as a late outcome) with the
    /// kept contents. Ends: they end the run (its queue row is finished with them). Ended: the run had ended before (no
    /// longer live).
    /// </summary>
    public sealed record Commit(IReadOnlyList<object> Events, bool Ends, bool Ended) : JournalVerdict;

    /// <summary>The file does not fit the run it names: set aside for the operator, never committed.</summary>
    public sealed record Refuse(string Reason) : JournalVerdict;
}

/// <summary>
/// The journal worker's one decision, pure: a journaled outcome against what the run's stream already records. The worker
/// loads the file and the stream, calls Decide, and commits or sets the file aside.
/// </summary>
public static class JournalDecisions
{
    /// <summary>
    /// Refused when: kept contents have no tenant, or one of them is not named by the file's outputs; the run's request is not
    /// recorded; the file's tenant is not the run's; the run already ended with another terminal event than its abandonment
    /// and the file brings anything but its sandbox's removal. Otherwise the events not yet recorded are committed, a
    /// terminal one of an abandoned run as a late outcome, and a late outcome already recorded (an earlier commit whose
    /// answer was lost) is not recorded again, whatever time the earlier one was recorded at.
    /// </summary>
    public static JournalVerdict Decide(JournalEntry entry, IReadOnlyList<JournalEvent> recorded, string node, DateTimeOffset now)
    {
        var runId = entry.RunId;
        if (entry.ContentSha256s.Count > 0 && entry.Tenant is null)
            return new JournalVerdict.Refuse("stored contents without the tenant that owns them");
        // Only outputs its own events name: a file cannot put other content into a tenant's store.
        var named = entry.Events.Select(e => e.Data).OfType<OutputRecorded>().SelectMany(o => new[] { o.Stdout.Sha256, o.Stderr.Sha256 })
            .ToHashSet(StringComparer.Ordinal);
        if (entry.ContentSha256s.FirstOrDefault(sha => !named.Contains(sha)) is { } stray)
            return new JournalVerdict.Refuse($"a content (sha256 {stray}) that none of its events names");
        if (recorded.FirstOrDefault()?.Data is not RunRequested requested)
            return new JournalVerdict.Refuse("an outcome for a run whose request is not recorded");
        if (requested.Caller.Tenant != entry.Tenant)
            return new JournalVerdict.Refuse("an outcome written for another tenant than the one that requested the run");

        var present = recorded.Select(e => e.Json).ToHashSet(StringComparer.Ordinal);
        var fresh = entry.Events.Where(e => !present.Contains(e.Json)).ToList();
        var end = recorded.FirstOrDefault(e => IsTerminal(e.Data))?.Data;
        if (end is null)
            return new JournalVerdict.Commit([.. fresh.Select(e => e.Data)], fresh.Any(e => IsTerminal(e.Data)), Ended: false);
        if (end is not RunAbandoned)
        {
            // The run has its own outcome: only its sandbox's removal (a later part of the same run) may still follow it.
            return fresh.All(e => e.Data is SandboxRemoved)
                ? new JournalVerdict.Commit([.. fresh.Select(e => e.Data)], Ends: false, Ended: true)
                : new JournalVerdict.Refuse($"an outcome for a run that already ended with its own ({TypeOf(recorded, end)}); only an abandoned "
                    + "run takes a late outcome, and only its sandbox's removal may follow another end");
        }
        // Abandoned meanwhile (its node was silent beyond the grace): the true outcome arrives as a late, non-terminal event, once.
        var late = recorded.Select(e => e.Data).OfType<LateOutcomeRecorded>().ToList();
        var events = new List<object>();
        foreach (var e in fresh)
        {
            if (!IsTerminal(e.Data))
                events.Add(e.Data);
            else if (RunDecisions.LateOutcome(runId, node, e.Type, e.Data, now) is var outcome
                     && !late.Any(l => l == outcome with { At = l.At }) && !events.Contains(outcome))
                events.Add(outcome);
        }
        return new JournalVerdict.Commit(events, Ends: false, Ended: true);
    }

    /// <summary>
    /// The artifacts the file's events name as stored: they were put before the outcome was journaled and the file does not
    /// keep their bytes, so only a hold keeps them in the store until the events commit (the outputs it keeps are put again).
    /// </summary>
    public static IReadOnlyList<string> ReliedOn(JournalEntry entry) =>
        [.. entry.Events.Select(e => e.Data).OfType<ArtifactRecorded>()
            .Where(a => a.Status == ArtifactStatus.Stored && a.Sha256 is not null).Select(a => a.Sha256!).Distinct(StringComparer.Ordinal)];

    private static bool IsTerminal(object data) => data is RunCompleted or RunFailed or RunAbandoned;

    private static string TypeOf(IReadOnlyList<JournalEvent> recorded, object data) => recorded.First(e => ReferenceEquals(e.Data, data)).Type;
}
