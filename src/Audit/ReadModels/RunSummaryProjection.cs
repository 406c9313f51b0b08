using JasperFx.Events;
using Marten.Events.Aggregation;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Audit.ReadModels;

/// <summary>The stored run summary (id = run id). A wrapper, because a document type with a static Apply of its
/// own (<see cref="RunSummary.Apply"/>) counts as conventional apply methods next to an Evolve override.</summary>
public sealed record RunSummaryView(Guid Id, RunSummary Summary);

/// <summary>
/// The run summary document, written inline in the transaction that appends the run's events. The fold is the
/// domain's own <see cref="RunSummary.Apply"/>; only run events are taken, so access-log and policy streams
/// never get a summary.
/// </summary>
public sealed class RunSummaryProjection : SingleStreamProjection<RunSummaryView, Guid>
{
    public const string ProjectionName = "run_summary";

    public RunSummaryProjection()
    {
        Name = ProjectionName;
        foreach (var type in RunEventTypes.All)
            IncludeType(type);
    }

    public override RunSummaryView? Evolve(RunSummaryView? snapshot, Guid id, IEvent e) =>
        new(id, RunSummary.Apply(snapshot?.Summary ?? RunSummary.Empty with { RunId = id }, WithoutContent(e.Data)));

    /// <summary>
    /// Output is stored once, in its OutputRecorded event. The document keeps its hashes, sizes and flags only: it is rewritten on
    /// every later event of the run, and with the content each rewrite would store up to two capped streams again.
    /// </summary>
    public static object WithoutContent(object data) => data is OutputRecorded o
        ? o with { Stdout = o.Stdout with { Content = "" }, Stderr = o.Stderr with { Content = "" } }
        : data;
}

public static class RunEventTypes
{
    public static readonly IReadOnlyList<Type> All =
    [
        typeof(RunRequested), typeof(RequestRejected), typeof(PolicyEvaluated), typeof(RunQueued), typeof(SandboxCreated),
        typeof(SandboxStarted), typeof(SandboxExited), typeof(OutputRecorded), typeof(SandboxRemoved), typeof(RunCompleted),
        typeof(RunFailed), typeof(RunAbandoned), typeof(ArtifactRecorded), typeof(LateOutcomeRecorded),
    ];
}
