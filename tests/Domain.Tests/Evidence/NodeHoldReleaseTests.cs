using Sandbox.Audited.Domain.Evidence;

namespace Sandbox.Audited.Domain.Tests.Evidence;

public sealed class NodeHoldReleaseTests
{
    private static readonly DateTimeOffset Now = new(2026, 11, 28, 12, 0, 0, TimeSpan.Zero);
    private static readonly TimeSpan AbandonGrace = TimeSpan.FromSeconds(60);
    private const string Digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    // A node silent for a day, with no claimed run and three holds in two tenants.
    private static NodeHoldFacts Node(Func<NodeHoldFacts, NodeHoldFacts>? change = null)
    {
        var node = new NodeHoldFacts("exec-7", Now, Now.AddDays(-10), Now.AddDays(-1), [], new Dictionary<string, int> { ["acme"] = 2, ["globex"] = 1 });
        return change is null ? node : change(node);
    }

    [Fact]
    public void TheHoldsOfANodeSilentLongerThanTheAbandonGraceWithNoClaimedRunAreReleased()
    {
        var verdict = NodeHoldRelease.Decide(Node(), AbandonGrace);
        Assert.IsType<NodeReleaseVerdict.Release>(verdict);
        Assert.Contains("3 hold(s) in 2 tenant(s)", verdict.Reason);
        Assert.Contains("last heartbeat 24 h ago", verdict.Reason);
    }

    [Fact]
    public void ANodeThatHeartbeatedWithinTheAbandonGraceIsRefused()
    {
        var verdict = NodeHoldRelease.Decide(Node(n => n with { HeartbeatAt = Now.AddSeconds(-20) }), AbandonGrace);
        Assert.IsType<NodeReleaseVerdict.Refuse>(verdict);
        Assert.Contains("heartbeated 20 s ago", verdict.Reason);
        Assert.Contains("wait 40 s", verdict.Reason);
    }

    [Fact]
    public void ANodeSilentForExactlyTheAbandonGraceMayBeReleased()
    {
        Assert.IsType<NodeReleaseVerdict.Release>(NodeHoldRelease.Decide(Node(n => n with { HeartbeatAt = Now - AbandonGrace }), AbandonGrace));
    }

    [Fact]
    public void ANodeTheRunQueueStillHasRunsClaimedByIsRefusedAndTheRunsNamed()
    {
        var run = Guid.CreateVersion7();
        var verdict = NodeHoldRelease.Decide(Node(n => n with { ClaimedRuns = [run] }), AbandonGrace);
        Assert.IsType<NodeReleaseVerdict.Refuse>(verdict);
        Assert.Contains(run.ToString(), verdict.Reason);
        Assert.Contains("1 run(s) claimed", verdict.Reason);
    }

    [Fact]
    public void ALiveNodeIsRefusedEvenWhenItHoldsNothing()
    {
        var verdict = NodeHoldRelease.Decide(Node(n => n with { HeartbeatAt = Now, HoldsByTenant = new Dictionary<string, int>() }), AbandonGrace);
        Assert.IsType<NodeReleaseVerdict.Refuse>(verdict);
    }

    [Fact]
    public void BothReasonsAreGivenWhenBothHold()
    {
        var verdict = NodeHoldRelease.Decide(Node(n => n with { HeartbeatAt = Now, ClaimedRuns = [Guid.CreateVersion7()] }), AbandonGrace);
        Assert.Contains("heartbeated", verdict.Reason);
        Assert.Contains("claimed", verdict.Reason);
    }

    [Fact]
    public void ANodeThatHoldsNothingHasNothingToRelease()
    {
        // A second release after the sweep removed what the first covered: the same command, nothing to do.
        var verdict = NodeHoldRelease.Decide(Node(n => n with { HoldsByTenant = new Dictionary<string, int>() }), AbandonGrace);
        Assert.IsType<NodeReleaseVerdict.NothingHeld>(verdict);
    }

    [Fact]
    public void TheHoldsOfANodeThatNeverRegisteredAreReleased()
    {
        var verdict = NodeHoldRelease.Decide(Node(n => n with { StartedAt = null, HeartbeatAt = null }), AbandonGrace);
        Assert.IsType<NodeReleaseVerdict.Release>(verdict);
        Assert.Contains("never registered", verdict.Reason);
    }

    [Theory]
    [InlineData("")]
    [InlineData("../etc")]
    [InlineData("node\nforged")]
    public void AnIdThatIsNoNodeIdIsRefused(string id)
    {
        var verdict = NodeHoldRelease.Decide(Node(n => n with { Node = id }), AbandonGrace);
        Assert.IsType<NodeReleaseVerdict.Refuse>(verdict);
        Assert.Contains("is not a node id", verdict.Reason);
        Assert.DoesNotContain("\n", verdict.Reason);
    }

    // The sweep's side: what a release covers.
    private static HoldFacts Hold(Func<HoldFacts, HoldFacts>? change = null)
    {
        var hold = new HoldFacts("acme", Digest, Guid.CreateVersion7(), "exec-7", Now.AddDays(-2), RequestRecorded: true, RunEnd.Abandoned, NamedByTheRun: false,
            NodeStartedAt: Now.AddDays(-10), NodeHeartbeatAt: Now.AddDays(-2).AddMinutes(1), NodeReleasedAt: Now.AddHours(-2));
        return change is null ? hold : change(hold);
    }

    [Theory]
    [InlineData(RunEnd.None)]
    [InlineData(RunEnd.Abandoned)]
    public void AHoldOfAReleasedNodeGoesAfterTheGraceThoughTheNodeIsSilent(RunEnd end)
    {
        var verdict = EvidenceSweep.DecideHold(Hold(h => h with { End = end }), Now, TimeSpan.FromHours(1));
        Assert.IsType<HoldVerdict.Release>(verdict);
        Assert.Contains("an operator released", verdict.Reason);
    }

    [Fact]
    public void WithoutTheReleaseTheSameHoldStays()
    {
        Assert.IsType<HoldVerdict.Keep>(EvidenceSweep.DecideHold(Hold(h => h with { NodeReleasedAt = null }), Now, TimeSpan.FromHours(1)));
    }

    [Fact]
    public void AHoldRenewedAfterTheReleaseStays()
    {
        // The node was only cut off: it came back after the release, renewed what it still holds, and is silent again since.
        var verdict = EvidenceSweep.DecideHold(Hold(h => h with { HeldAt = Now.AddMinutes(-70), NodeHeartbeatAt = Now.AddMinutes(-20) }), Now, TimeSpan.FromHours(1));
        Assert.IsType<HoldVerdict.Keep>(verdict);
    }

    [Fact]
    public void AHoldOfANodeThatStartedAgainAfterTheReleaseIsNotReleasedByIt()
    {
        // Started after the release, not yet renewed (its journal is read first): the node's own rules protect it.
        var verdict = EvidenceSweep.DecideHold(Hold(h => h with { NodeStartedAt = Now.AddMinutes(-1), NodeHeartbeatAt = Now }), Now, TimeSpan.FromHours(1));
        Assert.IsType<HoldVerdict.Keep>(verdict);
    }

    [Fact]
    public void AReleasedNodesHoldYoungerThanTheGraceStays()
    {
        var verdict = EvidenceSweep.DecideHold(Hold(h => h with { HeldAt = Now.AddMinutes(-30), NodeReleasedAt = Now.AddMinutes(-1) }), Now, TimeSpan.FromHours(1));
        Assert.IsType<HoldVerdict.Keep>(verdict);
    }
}
