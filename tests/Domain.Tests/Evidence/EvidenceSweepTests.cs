using Sandbox.Audited.Domain.Evidence;

namespace Sandbox.Audited.Domain.Tests.Evidence;

public sealed class EvidenceSweepTests
{
    private static readonly DateTimeOffset Now = new(2026, 11, 28, 12, 0, 0, TimeSpan.Zero);
    private static readonly TimeSpan Grace = TimeSpan.FromHours(1);
    private const string Digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    // An old hold of a recorded, unended run, on a node that started long ago and heartbeats now.
    private static HoldFacts Hold(Func<HoldFacts, HoldFacts>? change = null)
    {
        var hold = new HoldFacts("acme", Digest, Guid.CreateVersion7(), "node-a", Now.AddHours(-3), RequestRecorded: true, RunEnd.None, NamedByTheRun: false,
            NodeStartedAt: Now.AddDays(-1), NodeHeartbeatAt: Now.AddSeconds(-2));
        return change is null ? hold : change(hold);
    }

    private static ContentFacts Content(Func<ContentFacts, ContentFacts>? change = null)
    {
        var content = new ContentFacts("acme", Digest, 42, Now.AddHours(-3), Erased: false, Named: false, HoldsLeft: 0, Released: ["stored for run X, whose request was never recorded"]);
        return change is null ? content : change(content);
    }

    [Fact]
    public void AHoldYoungerThanTheGraceStaysWhateverItsRun()
    {
        var verdict = EvidenceSweep.DecideHold(Hold(h => h with { HeldAt = Now.AddMinutes(-59), RequestRecorded = false }), Now, Grace);
        Assert.IsType<HoldVerdict.Keep>(verdict);
    }

    [Fact]
    public void AHoldOfARunWhoseRequestWasNeverRecordedGoesAfterTheGrace()
    {
        var verdict = EvidenceSweep.DecideHold(Hold(h => h with { RequestRecorded = false, NodeHeartbeatAt = null, NodeStartedAt = null }), Now, Grace);
        Assert.IsType<HoldVerdict.Release>(verdict);
        Assert.Contains("never recorded", verdict.Reason);
    }

    [Fact]
    public void AHoldOfARunThatEndedGoesEvenWhileItsNodeIsSilent()
    {
        var verdict = EvidenceSweep.DecideHold(Hold(h => h with { End = RunEnd.Ended, NodeHeartbeatAt = Now.AddDays(-2) }), Now, Grace);
        Assert.IsType<HoldVerdict.Release>(verdict);
    }

    [Fact]
    public void AHoldTheRunNamesGoesAtOnceTheEventKeepsTheContent()
    {
        var verdict = EvidenceSweep.DecideHold(Hold(h => h with { HeldAt = Now.AddSeconds(-1), NamedByTheRun = true }), Now, Grace);
        Assert.IsType<HoldVerdict.Release>(verdict);
    }

    [Theory]
    [InlineData(RunEnd.None)]
    [InlineData(RunEnd.Abandoned)]
    public void AHoldOfARunWhoseNodeIsSilentStaysHoweverOld(RunEnd end)
    {
        // The node's journal may hold the outcome for days while it cannot reach PostgreSQL.
        var verdict = EvidenceSweep.DecideHold(Hold(h => h with { End = end, HeldAt = Now.AddDays(-30), NodeHeartbeatAt = Now.AddDays(-30).AddMinutes(5) }), Now, Grace);
        Assert.IsType<HoldVerdict.Keep>(verdict);
    }

    [Fact]
    public void AHoldStaysWhileItsNodeHasNotBeenUpForAGraceSinceItCameBack()
    {
        // Back after a crash: its journal is read and renewed only after the first heartbeat.
        var verdict = EvidenceSweep.DecideHold(Hold(h => h with { HeldAt = Now.AddDays(-1), NodeStartedAt = Now.AddMinutes(-10) }), Now, Grace);
        Assert.IsType<HoldVerdict.Keep>(verdict);
    }

    [Theory]
    [InlineData(RunEnd.None)]
    [InlineData(RunEnd.Abandoned)]
    public void AHoldGoesOnceItsNodeHeartbeatedAWholeGraceWithoutRenewingIt(RunEnd end)
    {
        var verdict = EvidenceSweep.DecideHold(Hold(h => h with { End = end }), Now, Grace);
        Assert.IsType<HoldVerdict.Release>(verdict);
        Assert.Contains("no longer holds", verdict.Reason);
    }

    [Fact]
    public void AHoldOfANodeThatNeverRegisteredStays()
    {
        var verdict = EvidenceSweep.DecideHold(Hold(h => h with { NodeStartedAt = null, NodeHeartbeatAt = null }), Now, Grace);
        Assert.IsType<HoldVerdict.Keep>(verdict);
    }

    [Fact]
    public void AnOldContentNoEventNamesWhoseHoldsWentIsRemovedWithItsReasons()
    {
        var verdict = EvidenceSweep.DecideContent(Content(), Now, Grace, includeUnheld: false);
        Assert.IsType<ContentVerdict.Remove>(verdict);
        Assert.Contains("never recorded", verdict.Reason);
    }

    [Fact]
    public void TheEmptyContentIsNeverRemoved()
    {
        var verdict = EvidenceSweep.DecideContent(Content(c => c with { Sha256 = EvidenceSweep.EmptySha256 }), Now, Grace, includeUnheld: true);
        Assert.IsType<ContentVerdict.Keep>(verdict);
    }

    [Fact]
    public void ANamedContentStaysEvenWhenTheRunThatStoredItFailed()
    {
        // Same digest, another run's event: content is shared per tenant.
        Assert.IsType<ContentVerdict.Keep>(EvidenceSweep.DecideContent(Content(c => c with { Named = true }), Now, Grace, includeUnheld: true));
    }

    [Fact]
    public void AnErasedContentKeepsItsRow()
    {
        Assert.IsType<ContentVerdict.Keep>(EvidenceSweep.DecideContent(Content(c => c with { Erased = true }), Now, Grace, includeUnheld: true));
    }

    [Fact]
    public void AContentAnotherRunStillHoldsStays()
    {
        Assert.IsType<ContentVerdict.Keep>(EvidenceSweep.DecideContent(Content(c => c with { HoldsLeft = 1 }), Now, Grace, includeUnheld: true));
    }

    [Fact]
    public void AContentStoredWithinTheGraceStaysThoughItsHoldWent()
    {
        Assert.IsType<ContentVerdict.Keep>(EvidenceSweep.DecideContent(Content(c => c with { StoredAt = Now.AddMinutes(-5) }), Now, Grace, includeUnheld: false));
    }

    [Fact]
    public void AContentNoHoldAccountsForGoesOnlyWhenTheOperatorSaidSo()
    {
        var unheld = Content(c => c with { Released = [] });
        Assert.IsType<ContentVerdict.Keep>(EvidenceSweep.DecideContent(unheld, Now, Grace, includeUnheld: false));
        Assert.IsType<ContentVerdict.Remove>(EvidenceSweep.DecideContent(unheld, Now, Grace, includeUnheld: true));
    }
}
