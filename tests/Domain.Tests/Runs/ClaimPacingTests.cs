using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Domain.Tests.Runs;

public sealed class ClaimPacingTests
{
    [Fact]
    public void AFreshWorkerClaimsForAFreeSlot() => Assert.True(new ClaimPacing().WorthClaimingForFreeSlot);

    [Fact]
    public void AClaimThatFoundNothingIsNotRepeatedForAFreeSlotUntilNewRunsAreAnnounced()
    {
        var pacing = new ClaimPacing();
        pacing.Claimed(pacing.Mark(), asked: 4, got: 0, leftBehind: false);
        Assert.False(pacing.WorthClaimingForFreeSlot);

        pacing.Announced();
        Assert.True(pacing.WorthClaimingForFreeSlot);
    }

    [Fact]
    public void AShortClaimThatTookTheLastRunsAlsoWaitsForAnnouncements()
    {
        var pacing = new ClaimPacing();
        pacing.Claimed(pacing.Mark(), asked: 8, got: 3, leftBehind: false);
        Assert.False(pacing.WorthClaimingForFreeSlot);
    }

    [Fact]
    public void AFullClaimMayHaveLeftMoreRunsSoAFreeSlotClaimsAgain()
    {
        var pacing = new ClaimPacing();
        pacing.Claimed(pacing.Mark(), asked: 2, got: 0, leftBehind: false);
        pacing.Announced();
        pacing.Claimed(pacing.Mark(), asked: 3, got: 3, leftBehind: false);
        Assert.True(pacing.WorthClaimingForFreeSlot);
    }

    [Fact]
    public void RunsLeftBehindByATenantCeilingKeepFreeSlotsClaiming()
    {
        // A slot freed by that tenant's run gives it room again: the next claim may take the run it looked past.
        var pacing = new ClaimPacing();
        pacing.Claimed(pacing.Mark(), asked: 5, got: 0, leftBehind: true);
        Assert.True(pacing.WorthClaimingForFreeSlot);
    }

    [Fact]
    public void RunsAnnouncedWhileAClaimWasInFlightAreNotForgottenByItsEmptyResult()
    {
        // The claim's snapshot may predate the commit the announcement was for.
        var pacing = new ClaimPacing();
        var mark = pacing.Mark();
        pacing.Announced();
        pacing.Claimed(mark, asked: 4, got: 0, leftBehind: false);
        Assert.True(pacing.WorthClaimingForFreeSlot);
    }
}
