using Sandbox.Audited.Domain.Policies;
using static Sandbox.Audited.Domain.Tests.Policies.PolicyFixtures;

namespace Sandbox.Audited.Domain.Tests.Policies;

public sealed class PolicyTestRunnerTests
{
    private static readonly PolicyBundle TwoRules = Bundle("""
        rules:
          - id: runners
            effect: permit
            when: { roles: [runner] }
          - id: no-shell
            effect: forbid
            when: { languages: [shell] }
        """);

    private const string RunnerCase = """
        cases:
          - name: runner runs python
            input: { roles: [runner], language: python, code: "print(1)" }
            expect: { decision: allow, ruleIds: [runners], limits: { memoryMb: 128 } }
        """;

    [Fact]
    public void AnUncoveredRuleFailsTheRun()
    {
        var result = PolicyTestRunner.Run(TwoRules, [("tests/a.yaml", RunnerCase)]);

        Assert.False(result.Success);
        Assert.True(Assert.Single(result.Cases).Passed);
        Assert.Equal(["no-shell"], result.UncoveredRuleIds);
        Assert.Contains("UNCOVERED rule no-shell", result.Report, StringComparison.Ordinal);
    }

    [Fact]
    public void CoveringEveryRulePasses()
    {
        var shellCase = """
            cases:
              - name: shell is forbidden
                input: { roles: [runner], language: sh }
                expect: { decision: deny, ruleIds: [no-shell] }
            """;

        var result = PolicyTestRunner.Run(TwoRules, [("tests/a.yaml", RunnerCase), ("tests/b.yaml", shellCase)]);

        Assert.True(result.Success, result.Report);
    }

    [Fact]
    public void AWrongExpectationFailsWithADiff()
    {
        var wrong = """
            cases:
              - name: wrong
                input: { roles: [runner], language: shell, limits: { memoryMb: 64 } }
                expect: { decision: allow, ruleIds: [runners], limits: { memoryMb: 128 }, reasons: ["nope"] }
            """;

        var result = PolicyTestRunner.Run(TwoRules, [("tests/a.yaml", wrong)]);

        var failed = Assert.Single(result.Cases);
        Assert.False(failed.Passed);
        Assert.Contains("decision: expected allow, got deny", failed.Differences);
        Assert.Contains("ruleIds: expected [runners], got [no-shell]", failed.Differences);
        Assert.Contains("limits.memoryMb: expected 128, got 64", failed.Differences);
        Assert.Contains("FAIL wrong (tests/a.yaml:2)", result.Report, StringComparison.Ordinal);
    }

    [Fact]
    public void AMalformedTestFileIsAnErrorWithItsLine()
    {
        var malformed = """
            cases:
              - name: typo
                input: { language: python, rolez: [runner] }
                expect: { decision: allow, ruleIds: [] }
            """;

        var result = PolicyTestRunner.Run(TwoRules, [("tests/a.yaml", malformed)]);

        Assert.False(result.Success);
        var error = Assert.Single(result.Errors);
        Assert.Equal(("tests/a.yaml", 3), (error.File, error.Line));
    }
}
