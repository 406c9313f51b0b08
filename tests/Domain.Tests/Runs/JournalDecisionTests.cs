using System.Text.Json;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Domain.Tests.Runs;

/// <summary>What the journal worker may add to a run from a node's journal file (JournalDecisions.Decide).</summary>
public sealed class JournalDecisionTests
{
    private static readonly Guid RunId = Guid.Parse("0190f0a0-0000-7000-8000-000000000002");
    private static readonly DateTimeOffset Now = new(2026, 11, 27, 8, 0, 0, TimeSpan.Zero);
    private static readonly DateTimeOffset Then = Now.AddMinutes(-2);
    private static readonly Caller Alice = new("alice", "acme", ["runner"]);

    // Type names as the store records them; the JSON only has to tell equal facts from different ones.
    private static JournalEvent E(object data) => new(data switch
    {
        RunRequested => "run_requested",
        SandboxStarted => "sandbox_started",
        SandboxExited => "sandbox_exited",
        OutputRecorded => "output_recorded",
        SandboxRemoved => "sandbox_removed",
        RunCompleted => "run_completed",
        RunFailed => "run_failed",
        RunAbandoned => "run_abandoned",
        LateOutcomeRecorded => "late_outcome_recorded",
        ArtifactRecorded => "artifact_recorded",
        _ => throw new ArgumentException(data.GetType().Name),
    }, data, JsonSerializer.Serialize(data, data.GetType()));

    private static readonly RunRequested Requested = new(RunId, Alice, "python", null, Sha256Hex.Of("x"), 1, Sha256Hex.Of(""), 0, [], [],
        RequestedLimits.None, "internal", new ClientInfo(null, null, null, null), "node-a", Then, InputsStored: true);

    private static StreamOutput Out(string text) => StreamOutput.InStore(Sha256Hex.Of(text), text.Length, text.Length, false);

    private static readonly SandboxExited Exited = new(RunId, 0, null, false, false, false, 1000, 500, 100, 9000, Then);
    private static readonly OutputRecorded Output = new(RunId, Out("hello\n"), Out(""), Then);
    private static readonly RunCompleted Completed = new(RunId, RunStatus.Succeeded, 0, 12, null, Then);
    private static readonly SandboxRemoved Removed = new(RunId, "c0ffee", SandboxRemoval.Removed, Then);
    private static readonly RunAbandoned Abandoned = new(RunId, "silent", "node-a", Then.AddSeconds(30));

    private static JournalEntry Outcome(string? tenant = "acme", params string[] contents) =>
        new(RunId, tenant, [E(Exited), E(Output), E(Completed)], [.. contents.Select(c => Sha256Hex.Of(c))]);

    private static JournalVerdict.Commit Commits(JournalVerdict verdict) => Assert.IsType<JournalVerdict.Commit>(verdict);

    private static string Refuses(JournalVerdict verdict) => Assert.IsType<JournalVerdict.Refuse>(verdict).Reason;

    [Fact]
    public void AnOutcomeReliesOnTheArtifactsItNamesAsStoredOnceEachAndOnNothingElse()
    {
        var kept = Sha256Hex.Of("kept");
        ArtifactRecorded Artifact(string name, string? sha256, string status) => new(RunId, name, 4, sha256, null, status, null, Then);
        var entry = new JournalEntry(RunId, "acme",
        [
            E(Exited), E(Output), E(Artifact("a.txt", kept, ArtifactStatus.Stored)), E(Artifact("b.txt", kept, ArtifactStatus.Stored)),
            E(Artifact("big.bin", Sha256Hex.Of("big"), ArtifactStatus.Exceeded)), E(Artifact("link", null, ArtifactStatus.Skipped)), E(Completed),
        ], [Sha256Hex.Of("hello\n")]);

        Assert.Equal([kept], JournalDecisions.ReliedOn(entry));
    }

    [Fact]
    public void AnOutcomeOfARunInFlightIsCommittedWholeAndEndsIt()
    {
        var verdict = Commits(JournalDecisions.Decide(Outcome("acme", "hello\n", ""), [E(Requested)], "node-a", Now));

        Assert.Equal<object>([Exited, Output, Completed], verdict.Events);
        Assert.True(verdict.Ends);
        Assert.False(verdict.Ended);
    }

    [Fact]
    public void EventsAlreadyRecordedByACommitWhoseAnswerWasLostAreNotRecordedAgain()
    {
        var verdict = Commits(JournalDecisions.Decide(Outcome(), [E(Requested), E(Exited), E(Output), E(Completed)], "node-a", Now));

        Assert.Empty(verdict.Events);
        Assert.False(verdict.Ends);
    }

    [Fact]
    public void AContentNoEventNamesOrWithoutATenantIsRefused()
    {
        Assert.Contains("that none of its events names", Refuses(JournalDecisions.Decide(Outcome("acme", "forged\n"), [E(Requested)], "node-a", Now)),
            StringComparison.Ordinal);
        Assert.Contains("without the tenant", Refuses(JournalDecisions.Decide(Outcome(null, "hello\n"), [E(Requested)], "node-a", Now)),
            StringComparison.Ordinal);
    }

    [Fact]
    public void AnOutcomeForARunWithoutItsRequestOrOfAnotherTenantIsRefused()
    {
        Assert.Contains("request is not recorded", Refuses(JournalDecisions.Decide(Outcome(), [], "node-a", Now)), StringComparison.Ordinal);
        Assert.Contains("another tenant", Refuses(JournalDecisions.Decide(Outcome("mallory"), [E(Requested)], "node-a", Now)), StringComparison.Ordinal);
    }

    [Fact]
    public void AnAbandonedRunTakesTheOutcomeAsALateNonTerminalEvent()
    {
        var verdict = Commits(JournalDecisions.Decide(Outcome(), [E(Requested), E(Abandoned)], "node-a", Now));

        Assert.Equal<object>([Exited, Output, RunDecisions.LateOutcome(RunId, "node-a", "run_completed", Completed, Now)], verdict.Events);
        Assert.False(verdict.Ends);
        Assert.True(verdict.Ended);
    }

    [Fact]
    public void ALateOutcomeAlreadyRecordedIsNotRecordedAgainWhateverTimeItWasRecordedAt()
    {
        // The first commit went through but its answer was lost: the file stays and is committed again a moment later.
        var first = RunDecisions.LateOutcome(RunId, "node-a", "run_completed", Completed, Now.AddSeconds(-5));

        var verdict = Commits(JournalDecisions.Decide(Outcome(), [E(Requested), E(Abandoned), E(Exited), E(Output), E(first)], "node-a", Now));

        Assert.Empty(verdict.Events);
    }

    [Fact]
    public void ALateOutcomeThatDiffersFromTheOneRecordedIsStillRecorded()
    {
        var another = RunDecisions.LateOutcome(RunId, "node-a", "run_completed", Completed with { ExitCode = 3, Status = RunStatus.Failed }, Now.AddSeconds(-5));

        var verdict = Commits(JournalDecisions.Decide(Outcome(), [E(Requested), E(Abandoned), E(Exited), E(Output), E(another)], "node-a", Now));

        Assert.Equal<object>([RunDecisions.LateOutcome(RunId, "node-a", "run_completed", Completed, Now)], verdict.Events);
    }

    [Fact]
    public void ARunThatEndedWithItsOwnOutcomeTakesOnlyItsSandboxsRemoval()
    {
        IReadOnlyList<JournalEvent> completed = [E(Requested), E(Exited), E(Output), E(Completed)];

        var removal = Commits(JournalDecisions.Decide(new JournalEntry(RunId, "acme", [E(Removed)], []), completed, "node-a", Now));
        Assert.Equal<object>([Removed], removal.Events);
        Assert.False(removal.Ends);

        // Any other fact, not only an output or a late outcome, would be added after the run's end: refused.
        foreach (var other in new object[] { Exited with { ExitCode = 1 }, new SandboxStarted(RunId, "c0ffee", Then), Completed with { ExitCode = 2 },
                     new RunFailed(RunId, "boom", Then) })
            Assert.Contains("already ended with its own (run_completed)",
                Refuses(JournalDecisions.Decide(new JournalEntry(RunId, "acme", [E(other)], []), completed, "node-a", Now)), StringComparison.Ordinal);
    }

    [Fact]
    public void ARunThatFailedTakesNoOutcomeOfAJournal()
    {
        IReadOnlyList<JournalEvent> failed = [E(Requested), E(new RunFailed(RunId, "the sandbox failed", Then))];

        Assert.Contains("(run_failed)", Refuses(JournalDecisions.Decide(Outcome(), failed, "node-a", Now)), StringComparison.Ordinal);
    }
}
