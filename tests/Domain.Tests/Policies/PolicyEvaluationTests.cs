using System.Diagnostics;
using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Domain.Runs;
using Xunit.Abstractions;
using static Sandbox.Audited.Domain.Tests.Policies.PolicyFixtures;

namespace Sandbox.Audited.Domain.Tests.Policies;

public sealed class PolicyEvaluationTests(ITestOutputHelper output)
{
    [Fact]
    public void DefaultBundleCasesAllPassAndCoverEveryRule()
    {
        var result = PolicyTestRunner.Run(Shipped(), ShippedTests());
        output.WriteLine(result.Report);

        Assert.True(result.Success, result.Report);
        Assert.Empty(result.UncoveredRuleIds);
        Assert.Contains("OK:", result.Report, StringComparison.Ordinal);
    }

    [Fact]
    public void ForbidWinsOverPermit()
    {
        var bundle = Bundle("""
            rules:
              - id: runners
                effect: permit
                when: { roles: [runner] }
              - id: no-shell
                effect: forbid
                when: { languages: [shell] }
            """);

        var decision = bundle.Evaluate(Input(language: "shell", roles: "runner"));

        Assert.False(decision.Allowed);
        Assert.Equal(["no-shell"], decision.RuleIds);
        Assert.Contains(decision.Reasons, r => r.StartsWith("forbidden by rule no-shell", StringComparison.Ordinal));
        Assert.True(bundle.Evaluate(Input(language: "python", roles: "runner")).Allowed);
    }

    [Fact]
    public void LimitsAreClampedToTheTightestPermitAndTheGlobalCeiling()
    {
        var bundle = Bundle("""
            rules:
              - id: wide
                effect: permit
                when: { roles: [runner] }
                limits: { memoryMb: 400, timeoutMs: 50000 }
              - id: narrow
                effect: permit
                when: { tenants: [acme] }
                limits: { memoryMb: 256 }
            """);

        var decision = bundle.Evaluate(Input(roles: "runner",
            limits: new RequestedLimits(MemoryMb: 1024, TimeoutMs: 55000, Cpus: 4, Pids: 100)));

        Assert.True(decision.Allowed);
        Assert.Equal(["wide", "narrow"], decision.RuleIds);
        Assert.Equal(new RunLimits(TimeoutMs: 50000, MemoryMb: 256, Cpus: 2, Pids: 100, OutputBytes: 65536, TmpfsMb: 16), decision.Limits);
        Assert.Contains("memoryMb 1024 requested, clamped to 256 by rule narrow", decision.Reasons);
        Assert.Contains("timeoutMs 55000 requested, clamped to 50000 by rule wide", decision.Reasons);
        Assert.Contains("cpus 4 requested, clamped to 2 by the global ceiling", decision.Reasons);
    }

    [Fact]
    public void DefaultDenySaysWhatWasAsked()
    {
        var bundle = Bundle("""
            rules:
              - id: runners
                effect: permit
                when: { roles: [runner] }
            """);

        var decision = bundle.Evaluate(Input(language: "js", classification: "public", roles: "auditor"));

        Assert.Equal(Decision.Deny, decision.Decision);
        Assert.Empty(decision.RuleIds);
        Assert.Equal(bundle.Digest, decision.BundleDigest);
        Assert.Equal(
            "no permit rule matched: subject 'alice' of tenant 'acme' with roles [auditor] asked to run javascript on public data",
            decision.Reasons[0]);
    }

    [Fact]
    public void RequestPropertiesAndNegatedRolesMatch()
    {
        var bundle = Bundle("""
            rules:
              - id: all
                effect: permit
              - id: many-args
                effect: forbid
                when: { argCountAbove: 2 }
              - id: big-memory-needs-admin
                effect: forbid
                when: { limitsAbove: { memoryMb: 256 }, notRoles: [admin] }
            """);

        Assert.True(bundle.Evaluate(Input()).Allowed);
        Assert.Equal(["many-args"], bundle.Evaluate(Input() with { ArgCount = 3 }).RuleIds);
        var big = Input(limits: new RequestedLimits(MemoryMb: 300));
        Assert.Equal(["big-memory-needs-admin"], bundle.Evaluate(big).RuleIds);
        Assert.True(bundle.Evaluate(big with { Caller = big.Caller with { Roles = ["admin"] } }).Allowed);
    }

    [Fact]
    public void DenyFindingDeniesAndRecordFindingOnlyLists()
    {
        var bundle = Bundle("""
            rules:
              - id: all
                effect: permit
            findings:
              - id: uses-eval
                action: record
                pattern: '\beval\('
              - id: miner
                action: deny
                description: mining pool
                pattern: 'stratum\+tcp://'
            """);

        var recorded = bundle.Evaluate(Input(code: "x = 1\ny = eval('2')"));
        Assert.True(recorded.Allowed);
        Assert.Equal(["all"], recorded.RuleIds);
        Assert.Equal(["uses-eval"], recorded.Findings);
        Assert.Contains("finding (recorded) uses-eval at line 2", recorded.Reasons);

        var denied = bundle.Evaluate(Input(code: "eval('x')\nconnect('stratum+tcp://pool:1')"));
        Assert.False(denied.Allowed);
        Assert.Equal(["miner"], denied.RuleIds);
        Assert.Equal(["uses-eval", "miner"], denied.Findings);
        Assert.Contains("denied by finding miner at line 2: mining pool", denied.Reasons);
    }

    [Fact]
    public void CatastrophicPatternFinishesQuickly()
    {
        var bundle = Bundle("""
            rules:
              - id: all
                effect: permit
            findings:
              - id: evil
                action: record
                pattern: '^(a+)+$'
            """);
        var code = new string('a', 200_000) + "!";

        var watch = Stopwatch.StartNew();
        var decision = bundle.Evaluate(Input(code: code));

        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5), $"took {watch.Elapsed}");
        Assert.True(decision.Allowed);
    }

    [Fact]
    public void EvaluationIsDeterministic()
    {
        var bundle = Shipped();
        var input = Input(code: "import socket\nimport subprocess", roles: ["runner"], limits: new RequestedLimits(MemoryMb: 999));

        var first = bundle.Evaluate(input);
        var second = bundle.Evaluate(input);

        Assert.Equal(first.RuleIds, second.RuleIds);
        Assert.Equal(first.Reasons, second.Reasons);
        Assert.Equal(first.Findings, second.Findings);
        Assert.Equal(first.Limits, second.Limits);
    }
}
