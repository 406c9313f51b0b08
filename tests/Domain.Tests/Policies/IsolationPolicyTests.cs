using Sandbox.Audited.Domain.Runtimes;
using static Sandbox.Audited.Domain.Tests.Policies.PolicyFixtures;

namespace Sandbox.Audited.Domain.Tests.Policies;

public sealed class IsolationPolicyTests
{
    private static readonly Sandbox.Audited.Domain.Policies.PolicyBundle Strict = Bundle("""
        rules:
          - id: runners
            effect: permit
            when: { roles: [runner], runtimes: [python, python-data] }
          - id: restricted-strong
            effect: permit
            when: { roles: [runner], classifications: [restricted] }
            requireIsolation: strong
        """);

    [Fact]
    public void PolicyRaisesTheClassAndSaysWhy()
    {
        var decision = Strict.Evaluate(Input(classification: "restricted", roles: "runner") with { Isolation = "standard" });

        Assert.True(decision.Allowed);
        Assert.Equal(Isolation.Strong, decision.Isolation);
        Assert.Contains("isolation standard requested, raised to strong by rule restricted-strong", decision.Reasons);
    }

    [Fact]
    public void ARequestForMoreIsolationIsNeverLowered()
    {
        var decision = Strict.Evaluate(Input(roles: "runner") with { Isolation = "strong" });

        Assert.Equal(Isolation.Strong, decision.Isolation);
        Assert.DoesNotContain(decision.Reasons, r => r.Contains("raised", StringComparison.Ordinal));
    }

    [Fact]
    public void WithoutARequestOrARuleTheClassIsStandardAndTheRuntimeTheLanguagesLeanOne()
    {
        var decision = Strict.Evaluate(Input(roles: "runner"));

        Assert.Equal(Isolation.Standard, decision.Isolation);
        Assert.Equal("python", decision.Runtime);
    }

    [Fact]
    public void ARuntimeOutsideARulesListIsNotPermitted()
    {
        var decision = Strict.Evaluate(Input(roles: "runner") with { Runtime = "python-ml" });

        Assert.False(decision.Allowed);
        Assert.Contains(decision.Reasons, r => r.Contains("asked to run python (runtime python-ml)", StringComparison.Ordinal));
        Assert.True(Strict.Evaluate(Input(roles: "runner") with { Runtime = "python-data" }).Allowed);
    }

    [Fact]
    public void OnlyAPermitCanRequireAClassAndOnlyAKnownOne()
    {
        var error = LoadError(("main.yaml", Header + """
            rules:
              - id: a
                effect: forbid
                requireIsolation: strong
              - id: b
                effect: permit
                requireIsolation: paranoid
            """));

        Assert.Contains(error.Errors, e => e.Message == "rule 'a': only a permit can carry 'requireIsolation'");
        Assert.Contains(error.Errors, e => e.Message == "rule 'b' requireIsolation must be one of standard, strong, not 'paranoid'");
    }
}
