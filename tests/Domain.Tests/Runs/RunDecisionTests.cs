using System.Collections.Immutable;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Domain.Tests.Runs;

public sealed class RunDecisionTests
{
    private static readonly Guid RunId = Guid.Parse("0190f0a0-0000-7000-8000-000000000001");
    private static readonly DateTimeOffset Now = new(2026, 11, 27, 8, 0, 0, TimeSpan.Zero);
    private static readonly Caller Alice = new("alice", "acme", ["runner"]);
    private static readonly ClientInfo Client = new("127.0.0.1", "tests", null, "corr-1");
    private static readonly RunLimits Limits = new(5000, 128, 0.5, 64, 65536, 16);

    private static readonly SandboxSettings Settings = new("runc", "none", true, "65534:65534", ["ALL"], ["no-new-privileges"], "/tmp:size=16m",
        128L << 20, 128L << 20, 500_000_000, 64, ["nofile=64:64"], false, ImmutableDictionary<string, string>.Empty);

    private static readonly SandboxFacts Sandbox = new("c0ffee", "sbx-python:current", "sha256:abc", true, Now.AddSeconds(-5), Settings,
        "python", "standard", "sha256:layer", "sha256:sbom");

    private static PolicyDecision Decided(string decision) =>
        new(decision, "sha256:bundle", ["rule-1"], Limits, ["finding"], decision == Decision.Deny ? ["Not on Fridays."] : [], "python", "standard");

    private static ExitReport Exit(int? code = 0, bool timedOut = false, bool oom = false, bool pids = false) =>
        new(code, null, timedOut, oom, pids, 3, 0, false, false, 1200, 800, 100, 9000);

    private static StreamOutput Out(string text) => new(Sha256Hex.Of(text), text.Length, text.Length, false, "utf8", text, Stored: true);

    [Fact]
    public void RejectedRequestIsRecordedAndEndsRejected()
    {
        IReadOnlyList<string> errors = ["'language' is required.", "'code' is empty."];

        var events = RunDecisions.Reject(RunId, Alice, Client, 400, errors, null, "print(1)", Now);

        Assert.Equal<object>(
        [
            new RequestRejected(RunId, Alice, 400, errors, null, Sha256Hex.Of("print(1)"), Client, Now),
            new RunCompleted(RunId, RunStatus.Rejected, null, 0, "'language' is required. 'code' is empty.", Now),
        ], events);
    }

    [Fact]
    public void RejectionWithoutCodeHasNoCodeDigest() =>
        Assert.Null(((RequestRejected)RunDecisions.Reject(RunId, Alice, Client, 413, ["Too large."], null, null, Now)[0]).CodeSha256);

    [Fact]
    public void AllowedRequestIsRecordedWithItsDecisionAndNothingElse()
    {
        var request = new ValidRunRequest("python", "print('é')", [1, 2, 3], ["-v"], [], RequestedLimits.None, "internal", "python");
        IReadOnlyList<FileDigest> files = [new("data.csv", 10, "sha256-of-data")];
        var decision = Decided(Decision.Allow);

        var events = RunDecisions.Request(RunId, Alice, Client, request, files, decision, "node-a", 7, Now);

        Assert.Equal<object>(
        [
            new RunRequested(RunId, Alice, "python", null, Sha256Hex.Of("print('é')"), 11, Sha256Hex.Of([1, 2, 3]), 3, request.Args, files,
                request.Limits, "internal", Client, "node-a", Now, "python", "standard", InputsStored: true),
            new PolicyEvaluated(RunId, "allow", "sha256:bundle", decision.RuleIds, Limits, decision.Findings, decision.Reasons, Now, "python", "standard"),
        ], events);
    }

    [Fact]
    public void DeniedRequestEndsDeniedWithThePolicyReasons()
    {
        var request = new ValidRunRequest("python", "x", [], [], [], RequestedLimits.None, "internal");
        var reproduced = Guid.NewGuid();

        var events = RunDecisions.Request(RunId, Alice, Client, request, [], Decided(Decision.Deny), "node-a", 7, Now, reproduced);

        Assert.Equal(3, events.Length);
        Assert.Equal(reproduced, ((RunRequested)events[0]).ReproducesRunId);
        Assert.Equal(new RunCompleted(RunId, RunStatus.Denied, null, 7, "Not on Fridays.", Now), events[2]);
    }

    [Fact]
    public void RefusedAdmissionEndsRefused() =>
        Assert.Equal<object>([new RunCompleted(RunId, RunStatus.Refused, null, 42, "Queue full.", Now)], RunDecisions.Refuse(RunId, "Queue full.", 42, Now));

    [Fact]
    public void NoSandboxFailsTheRun() =>
        Assert.Equal<object>([new RunFailed(RunId, "No sandbox could be created: engine down", Now)], RunDecisions.NoSandbox(RunId, "engine down", Now));

    [Fact]
    public void StartedSandboxIsNamedWithItsSettingsAndImage()
    {
        var started = Now.AddMilliseconds(-3);

        var events = RunDecisions.SandboxStarted(RunId, "node-a", Sandbox, started, Now);

        Assert.Equal<object>(
        [
            new SandboxCreated(RunId, "c0ffee", "sbx-python:current", "sha256:abc", "node-a", true, Now.AddSeconds(-5), Settings, Now,
                "python", "standard", "sha256:layer", "sha256:sbom"),
            new SandboxStarted(RunId, "c0ffee", started),
        ], events);
    }

    [Fact]
    public void SandboxThatNeverBecameReadyIsNamedFailedAndRemoved()
    {
        var created = new SandboxFacts("dead", "sbx-python:current", "sha256:abc", false, Now, Settings);

        var events = RunDecisions.SandboxNotReady(RunId, "node-a", created, "start timed out", SandboxRemoval.Removed, Now);

        Assert.Equal<object>(
        [
            new SandboxCreated(RunId, "dead", "sbx-python:current", "sha256:abc", "node-a", false, Now, Settings, Now),
            new RunFailed(RunId, "start timed out", Now),
            new SandboxRemoved(RunId, "dead", SandboxRemoval.Removed, Now),
        ], events);
    }

    [Fact]
    public void UnconfirmedRemovalIsNotRecorded()
    {
        var created = new SandboxFacts("dead", "img", "sha256:abc", false, Now, Settings);

        var events = RunDecisions.SandboxNotReady(RunId, "node-a", created, "start timed out", null, Now);

        Assert.Equal([typeof(SandboxCreated), typeof(RunFailed)], events.Select(e => e.GetType()));
    }

    [Fact]
    public void OutcomeRecordsExitOutputArtifactsThenTheTerminalEvent()
    {
        var stdout = Out("1\n");
        var stderr = Out("");
        IReadOnlyList<ArtifactRecorded> artifacts = [RunDecisions.ArtifactStored(RunId, "out/report.json", 2, "sha-r", Now)];

        var events = RunDecisions.Outcome(RunId, Exit(), false, stdout, stderr, artifacts, null, 19, Now);

        Assert.Equal<object>(
        [
            new SandboxExited(RunId, 0, null, false, false, false, 1200, 800, 100, 9000, Now),
            new OutputRecorded(RunId, stdout, stderr, Now),
            new ArtifactRecorded(RunId, "out/report.json", 2, "sha-r", "application/json", ArtifactStatus.Stored, null, Now),
            new RunCompleted(RunId, RunStatus.Succeeded, 0, 19, null, Now),
        ], events);
    }

    [Theory]
    [InlineData(1, false, false, false, false, RunStatus.Failed)]
    [InlineData(0, false, false, false, true, RunStatus.OutputTruncated)]
    [InlineData(137, true, false, false, false, RunStatus.TimedOut)]
    [InlineData(137, true, true, false, false, RunStatus.MemoryExceeded)]
    [InlineData(137, true, false, true, false, RunStatus.PidsExhausted)]
    public void OutcomeStatusIsTheLimitThatBitBeforeTheExitCode(int code, bool timedOut, bool oom, bool pids, bool truncated, string status)
    {
        var events = RunDecisions.Outcome(RunId, Exit(code, timedOut, oom, pids), truncated, Out(""), Out(""), [], "problem", 5, Now);

        Assert.Equal(new RunCompleted(RunId, status, code, 5, "problem", Now), events[^1]);
    }

    [Theory]
    [InlineData(false, "The sandbox failed: attach broke")]
    [InlineData(true, "The service shut down before the run finished (grace period exceeded); the sandbox was killed.")]
    public void BrokenSandboxFailsTheRun(bool shutDown, string reason) =>
        Assert.Equal<object>([new RunFailed(RunId, reason, Now)], RunDecisions.SandboxFailed(RunId, "attach broke", shutDown, Now));

    [Fact]
    public void RemovalNamesWhoEstablishedIt() =>
        Assert.Equal<object>([new SandboxRemoved(RunId, "c0ffee", SandboxRemoval.Reaped, Now)], RunDecisions.Removed(RunId, "c0ffee", SandboxRemoval.Reaped, Now));

    [Theory]
    [InlineData(new string[0], new string[0], "before a sandbox was recorded")]
    [InlineData(new[] { "a" }, new[] { "a", "b" }, "its sandbox was removed at restart")]
    [InlineData(new[] { "a", "c" }, new[] { "a" }, "no longer in the engine at restart")]
    public void AbandonedRunSaysWhatIsKnownOfItsSandbox(string[] containers, string[] swept, string says)
    {
        var events = RunDecisions.Abandon(RunId, "node-a", containers, swept, Now);

        var abandoned = Assert.IsType<RunAbandoned>(Assert.Single(events));
        Assert.Equal(("node-a", Now), (abandoned.Node, abandoned.At));
        Assert.Contains(says, abandoned.Reason);
    }

    [Fact]
    public void ArtifactsNotKeptSayWhy()
    {
        Assert.Equal(new ArtifactRecorded(RunId, "big.bin", 9, null, null, ArtifactStatus.Exceeded, "file_cap", Now),
            RunDecisions.ArtifactNotSent(RunId, "big.bin", 9, null, "file_cap", Now));
        Assert.Equal(new ArtifactRecorded(RunId, "a.csv", 9, "sha-a", "text/csv", ArtifactStatus.Skipped, "not_stored", Now),
            RunDecisions.ArtifactNotStored(RunId, "a.csv", 9, "sha-a", Now));
    }

    [Fact]
    public void EveryPathThatEndsARunEndsItOnce()
    {
        var request = new ValidRunRequest("python", "x", [], [], [], RequestedLimits.None, "internal");
        object[][] endings =
        [
            RunDecisions.Reject(RunId, Alice, Client, 400, ["bad"], null, null, Now),
            RunDecisions.Request(RunId, Alice, Client, request, [], Decided(Decision.Deny), "n", 1, Now),
            RunDecisions.Refuse(RunId, "full", 1, Now),
            RunDecisions.NoSandbox(RunId, "down", Now),
            RunDecisions.SandboxNotReady(RunId, "n", Sandbox, "broke", SandboxRemoval.Removed, Now),
            RunDecisions.Outcome(RunId, Exit(), false, Out(""), Out(""), [], null, 1, Now),
            RunDecisions.SandboxFailed(RunId, "broke", false, Now),
            RunDecisions.Abandon(RunId, "n", [], [], Now),
            RunDecisions.Abandon(RunId, "n", [], [], Now, waitedInQueue: true),
            RunDecisions.InputsUnreadable(RunId, "erased", Now),
            RunDecisions.AbandonSilentNode(RunId, "exec-b", Now.AddMinutes(-2), 60, Now),
            RunDecisions.EndMovedRow(RunId, new MovedRow("refused", "api-a", null, 1500, Now), "api-a", atRestart: true)!,
            RunDecisions.EndMovedRow(RunId, new MovedRow("abandoned", "api-a", null, 0, Now), "api-a", atRestart: true)!,
            RunDecisions.EndMovedRow(RunId, new MovedRow("abandoned", "api-a", "exec-b", 0, Now), "exec-b", atRestart: false)!,
        ];

        Assert.All(endings, events => Assert.Single(events, e => e is RunCompleted or RunFailed or RunAbandoned));
        Assert.All(endings, events => Assert.True(RunSummary.Fold(RunId, events).IsTerminal));
    }

    [Fact]
    public void ASilentExecutorsRunIsAbandonedNamingTheNodeAndTheGrace()
    {
        var abandoned = Assert.IsType<RunAbandoned>(Assert.Single(RunDecisions.AbandonSilentNode(RunId, "exec-b", null, 60, Now)));

        Assert.Equal("exec-b", abandoned.Node);
        Assert.Contains("Executor node 'exec-b' went silent", abandoned.Reason, StringComparison.Ordinal);
        Assert.Contains("has not heartbeated ever (longer than the 60 s grace)", abandoned.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void AnOutputTheStoreRefusedEndsTheRunFailedNamingTheOutputAndWhy()
    {
        var events = RunDecisions.Outcome(RunId, Exit(), false, Out("a"), Out(""), [], null, 12, Now, "the evidence store refused its stdout (SQLSTATE 42501: permission denied)");

        Assert.IsType<OutputRecorded>(events[1]);
        var failed = Assert.IsType<RunFailed>(events[^1]);
        Assert.Equal("The program ended (succeeded, exit code 0), but its output could not be kept: the evidence store refused its stdout "
            + "(SQLSTATE 42501: permission denied). The record names it by digest and size only.", failed.Reason);
        Assert.Single(events, e => e is RunCompleted or RunFailed or RunAbandoned);
    }

    [Fact]
    public void AnOutcomeTheStoreRefusedIsReplacedByARecordableFailureSayingWhatItWas()
    {
        var refused = RunDecisions.Outcome(RunId, Exit(3), false, Out("a"), Out(""), [], null, 12, Now);

        var failed = Assert.IsType<RunFailed>(Assert.Single(RunDecisions.OutcomeRefused(RunId, refused, "SQLSTATE 22P05: unsupported \0 in \u0000 text", Now)));

        Assert.StartsWith("The run's outcome could not be recorded: the audit store refused it (SQLSTATE 22P05: ", failed.Reason, StringComparison.Ordinal);
        Assert.Contains("It had ended failed with exit code 3;", failed.Reason, StringComparison.Ordinal);
        Assert.DoesNotContain('\0', failed.Reason);
    }

    [Fact]
    public void ARefusedOutcomeIsFirstAccountedForWithItsExitAndOutputsAndARunFailedInPlaceOfItsEnding()
    {
        var refused = RunDecisions.Outcome(RunId, Exit(3), false, Out("a"), Out(""), [], null, 12, Now);

        var account = RunDecisions.OutcomeRefusedKeepingFacts(RunId, refused, "SQLSTATE 23514", Now);

        Assert.Equal(refused.Where(e => e is not RunCompleted), account.SkipLast(1));
        var failed = Assert.IsType<RunFailed>(account[^1]);
        Assert.Contains("It had ended failed with exit code 3; the event that said so is not in the record (its exit and output are).", failed.Reason, StringComparison.Ordinal);
        Assert.Single(account, e => e is RunFailed or RunCompleted);
    }

    [Fact]
    public void ARefusedBatchOfNothingButItsEndingHasNoFactsToKeep() =>
        Assert.Empty(RunDecisions.OutcomeRefusedKeepingFacts(RunId, [new RunCompleted(RunId, RunStatus.Succeeded, 0, 1, null, Now)], "SQLSTATE 23514", Now));

    [Fact]
    public void AnOutcomeArrivingAfterAbandonmentIsALateNonTerminalEventCarryingTheOriginal()
    {
        var original = new RunCompleted(RunId, RunStatus.Succeeded, 0, 120, null, Now.AddMinutes(-3));

        var late = RunDecisions.LateOutcome(RunId, "exec-b", "run_completed", original, Now);

        Assert.Equal(new LateOutcomeRecorded(RunId, "exec-b", "run_completed", RunStatus.Succeeded, 0, null, Now.AddMinutes(-3), Now), late);
        Assert.Throws<ArgumentException>(() => RunDecisions.LateOutcome(RunId, "exec-b", "x", new SandboxStarted(RunId, "c", Now), Now));
    }

    [Fact]
    public void ARunThatWaitedInTheQueueIsAbandonedAsNeverRun()
    {
        var abandoned = Assert.IsType<RunAbandoned>(Assert.Single(RunDecisions.Abandon(RunId, "api-a", [], [], Now, waitedInQueue: true)));

        Assert.Contains("waited in the queue for an executor; it never ran", abandoned.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void ARowMovedWithoutItsTerminalEventGetsTheOneTheMoveMeantAtTheTimeOfTheMove()
    {
        var refused = Assert.IsType<RunCompleted>(Assert.Single(RunDecisions.EndMovedRow(RunId, new MovedRow("refused", "api-a", null, 1500, Now.AddMinutes(-1)), "api-a", atRestart: true)!));
        var abandoned = Assert.IsType<RunAbandoned>(Assert.Single(RunDecisions.EndMovedRow(RunId, new MovedRow("abandoned", "api-a", null, 0, Now), "api-a", atRestart: true)!));

        Assert.Equal((RunStatus.Refused, 1500L, Now.AddMinutes(-1)), (refused.Status, refused.DurationMs, refused.At));
        Assert.Contains("recorded when node 'api-a' restarted", refused.Reason, StringComparison.Ordinal);
        Assert.Equal("api-a", abandoned.Node);
        Assert.Contains("it never ran", abandoned.Reason, StringComparison.Ordinal);
        Assert.Null(RunDecisions.EndMovedRow(RunId, new MovedRow("finished", "api-a", "api-a", 0, Now), "api-a", atRestart: true));
        Assert.Null(RunDecisions.EndMovedRow(RunId, new MovedRow("claimed", "api-a", "api-a", 0, Now), "api-a", atRestart: true));
    }

    // Rows move to refused only when the queue wait runs out (a draining api node leaves its runs queued): the reason says
    // that and how long it waited, never that an api node was shutting down.
    [Theory]
    [InlineData(true, "The refusal was recorded when node 'api-a' restarted: it had not been committed before that node's previous process stopped.")]
    [InlineData(false, "The refusal was recorded later by node 'api-a' (its heartbeat's recovery pass): it had not been committed when the row moved.")]
    public void ARefusedRowSaysTheQueueWaitRanOutAndWhenItWasRecorded(bool atRestart, string when)
    {
        var refused = Assert.IsType<RunCompleted>(Assert.Single(RunDecisions.EndMovedRow(RunId, new MovedRow("refused", "api-a", null, 1500, Now), "api-a", atRestart)!));

        Assert.Equal("No executor took the run within its queue wait (1500 ms): every sandbox slot was busy, or its tenant was at its ceiling. " + when,
            refused.Reason);
        Assert.DoesNotContain("shutting down", refused.Reason, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(true, "recorded when node 'api-a' restarted")]
    [InlineData(false, "recorded later by node 'api-a' (its heartbeat's recovery pass)")]
    public void AnUnclaimedAbandonedRowNamesTheApiNodeThatRecordedItAndSaysItNeverRan(bool atRestart, string when)
    {
        var abandoned = Assert.IsType<RunAbandoned>(Assert.Single(RunDecisions.EndMovedRow(RunId, new MovedRow("abandoned", "api-a", null, 800, Now), "api-a", atRestart)!));

        Assert.StartsWith("The api node that recorded this run ('api-a') stopped without a clean shutdown while the run waited in the queue for an "
            + "executor; it never ran. The abandonment was " + when, abandoned.Reason, StringComparison.Ordinal);
        Assert.Equal(("api-a", Now), (abandoned.Node, abandoned.At));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AClaimedAbandonedRowNamesTheExecutorThatHeldItAndClaimsNoOutcomeNorCause(bool atRestart)
    {
        var abandoned = Assert.IsType<RunAbandoned>(Assert.Single(RunDecisions.EndMovedRow(RunId, new MovedRow("abandoned", "api-a", "exec-b", 0, Now), "exec-b", atRestart)!));

        Assert.StartsWith("The run was abandoned while executor node 'exec-b' held it; the abandonment was recorded ", abandoned.Reason, StringComparison.Ordinal);
        Assert.EndsWith("No outcome is known.", abandoned.Reason, StringComparison.Ordinal);
        Assert.DoesNotContain("api node", abandoned.Reason, StringComparison.Ordinal);
        Assert.DoesNotContain("never ran", abandoned.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void ARowEndedWhileItsNodeRunsSaysSoAndNotThatTheNodeRestarted()
    {
        var refused = Assert.IsType<RunCompleted>(Assert.Single(RunDecisions.EndMovedRow(RunId, new MovedRow("refused", "api-a", null, 1500, Now), "api-a", atRestart: false)!));
        var abandoned = Assert.IsType<RunAbandoned>(Assert.Single(RunDecisions.EndMovedRow(RunId, new MovedRow("abandoned", "api-a", "api-a", 0, Now), "api-a", atRestart: false)!));

        Assert.Contains("heartbeat's recovery pass", refused.Reason, StringComparison.Ordinal);
        Assert.DoesNotContain("restart", refused.Reason, StringComparison.Ordinal);
        Assert.DoesNotContain("restart", abandoned.Reason, StringComparison.Ordinal);
        Assert.Contains("No outcome is known", abandoned.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void ARefusalRecordsTheClientsStringsShortAndWithoutControlCharacters()
    {
        var huge = new string('x', 100_000);
        var events = RunDecisions.Reject(RunId, new Caller("alice", "acme", ["runner"]), new ClientInfo("127.0.0.1", "tests", null, "corr-1"), 400,
            [$"Unknown language '{ClientText.Echo("py\0thon")}'.", "raw \0 from elsewhere " + huge], "py\0" + huge, "x", Now);

        var rejected = Assert.IsType<RequestRejected>(events[0]);
        Assert.Equal("Unknown language 'py\\u0000thon'.", rejected.Errors[0]);
        Assert.StartsWith("raw \\u0000 from elsewhere xxx", rejected.Errors[1]);
        Assert.EndsWith("(100021 characters)", rejected.Errors[1]);
        Assert.True(rejected.Errors[1].Length < ClientText.MaxError + 40);
        Assert.StartsWith("py\\u0000xxx", rejected.Language);
        Assert.True(rejected.Language!.Length < ClientText.MaxEcho + 40);
        Assert.DoesNotContain('\0', Assert.IsType<RunCompleted>(events[1]).Reason!);
    }

    [Fact]
    public void AnEchoIsCutBetweenCharactersNeverInsideASurrogatePairAndLoneSurrogatesAreEscaped()
    {
        // 63 letters and an emoji (two UTF-16 units at 63 and 64): a cut at 64 units would leave a lone high surrogate,
        // which a jsonb event cannot hold.
        var echo = ClientText.Echo(new string('a', 63) + "\U0001F600" + "tail");

        Assert.Equal(new string('a', 63) + "… (69 characters)", echo);
        Assert.Equal("a\\ud800b", ClientText.Echo("a\ud800b"));
        Assert.Equal("\U0001F600 ok", ClientText.Echo("\U0001F600 ok"));
        Assert.Equal("tab\\u0009 and newline\\u000a", ClientText.Escape("tab\t and newline\n"));
    }
}
