using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Domain.Tests.Policies;

public sealed class PolicyReplayTests
{
    private static readonly RunRequested Request = new(
        Guid.NewGuid(), new Caller("alice", "acme", ["runner"]), "python", "print(1)", "sha", 8, "sha", 5,
        ["a", "b"], [new FileDigest("data.csv", 3, "sha")], new RequestedLimits(MemoryMb: 1024), "confidential",
        new ClientInfo(null, null, null, null), "node", DateTimeOffset.UnixEpoch);

    [Fact]
    public void TheInputIsRebuiltFromEveryRecordedFact()
    {
        var input = PolicyReplay.InputOf(Request);

        Assert.Equal(new PolicyInput(Request.Caller, "python", "confidential", new RequestedLimits(MemoryMb: 1024), "print(1)", 2, 1, 5), input);
    }

    [Fact]
    public void TheSameBundleAndInputReplayWithoutDifferences()
    {
        var bundle = PolicyFixtures.Shipped();
        var decision = bundle.Evaluate(PolicyReplay.InputOf(Request));
        var recorded = new PolicyEvaluated(Request.RunId, decision.Decision, decision.BundleDigest, decision.RuleIds, decision.Limits,
            decision.Findings, decision.Reasons, DateTimeOffset.UnixEpoch);

        Assert.Empty(PolicyReplay.Differences(PolicyReplay.DecisionOf(recorded), bundle.Evaluate(PolicyReplay.InputOf(Request))));
    }

    [Fact]
    public void EveryDifferingFieldIsNamed()
    {
        var recorded = new PolicyDecision("allow", "d1", ["a"], new RunLimits(1000, 128, 1, 64, 100, 16), [], ["permitted"]);
        var replayed = recorded with { Decision = "deny", RuleIds = ["b"], Limits = recorded.Limits with { MemoryMb = 96 } };

        var differences = PolicyReplay.Differences(recorded, replayed);

        Assert.Equal(["decision: recorded 'allow', replayed 'deny'", "ruleIds: recorded [a], replayed [b]", "limits.memoryMb: recorded '128', replayed '96'"], differences);
    }
}
