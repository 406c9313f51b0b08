using System.Globalization;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Domain.Evidence;

/// <summary>
/// What `sbx evidence release-holds NODE` knows about the node, read at one moment of the database's clock while the node's
/// row is locked: when it started and last heartbeated (null: it never registered), the runs the run queue still has
/// claimed by it, and how many holds it has in each tenant.
/// </summary>
public sealed record NodeHoldFacts(
    string Node,
    DateTimeOffset Now,
    DateTimeOffset? StartedAt,
    DateTimeOffset? HeartbeatAt,
    IReadOnlyList<Guid> ClaimedRuns,
    IReadOnlyDictionary<string, int> HoldsByTenant)
{
    public int Holds => HoldsByTenant.Values.Sum();
}

public abstract record NodeReleaseVerdict(string Reason)
{
    /// <summary>The node may still need its content: nothing is released.</summary>
    public sealed record Refuse(string Reason) : NodeReleaseVerdict(Reason);

    /// <summary>The node holds nothing (never did, or the sweep already released what a previous release covered).</summary>
    public sealed record NothingHeld(string Reason) : NodeReleaseVerdict(Reason);

    /// <summary>Every hold of the node, as of now, may go: the sweep releases them after its grace.</summary>
    public sealed record Release(string Reason) : NodeReleaseVerdict(Reason);
}

/// <summary>
/// Whether an operator may release the evidence holds of a node that never comes back (its machine decommissioned): the
/// sweep keeps a silent node's holds for good, since its journal may bring outcomes that name the content. Refused while
/// the node heartbeated within Queue:AbandonGraceSeconds (it is up, or only briefly away), and while the run queue still
/// has runs claimed by it (they are not yet recorded abandoned, so the node is still counted on to end them).
/// </summary>
public static class NodeHoldRelease
{
    public static NodeReleaseVerdict Decide(NodeHoldFacts node, TimeSpan abandonGrace)
    {
        var name = NodeIds.Quote(node.Node);
        if (NodeIds.Problem(node.Node) is { } problem)
            return new NodeReleaseVerdict.Refuse($"{name} is not a node id: {problem}.");
        var refusals = new List<string>();
        if (node.HeartbeatAt is { } beat && node.Now - beat < abandonGrace)
            refusals.Add($"it heartbeated {Ago(node.Now - beat)} ago, within Queue:AbandonGraceSeconds ({Seconds(abandonGrace)} s), so it is up or may come back "
                + $"and need its content; stop it for good, wait {Seconds(abandonGrace - (node.Now - beat))} s and run this again");
        if (node.ClaimedRuns.Count > 0)
            refusals.Add($"the run queue still has {node.ClaimedRuns.Count} run(s) claimed by it ({string.Join(", ", node.ClaimedRuns.Take(5))}"
                + $"{(node.ClaimedRuns.Count > 5 ? ", …" : "")}); a running node records them abandoned once their lease expired and this node "
                + "has been silent for Queue:AbandonGraceSeconds: keep (or start) one node running, then run this again");
        if (refusals.Count > 0)
            return new NodeReleaseVerdict.Refuse($"The holds of node {name} are not released: {string.Join("; and ", refusals)}.");

        var seen = node.HeartbeatAt is { } last ? $"last heartbeat {Ago(node.Now - last)} ago" : "never registered";
        if (node.Holds == 0)
            return new NodeReleaseVerdict.NothingHeld($"Node {name} ({seen}) holds no stored content: nothing to release.");
        return new NodeReleaseVerdict.Release(
            $"Node {name} ({seen}) is released: its {node.Holds} hold(s) in {node.HoldsByTenant.Count} tenant(s) no longer keep their content.");
    }

    private static string Seconds(TimeSpan span) => Math.Ceiling(span.TotalSeconds).ToString(CultureInfo.InvariantCulture);

    private static string Ago(TimeSpan span) => span.TotalSeconds switch
    {
        < 120 => $"{Math.Max(0, (int)span.TotalSeconds)} s",
        < 7200 => $"{(int)span.TotalMinutes} min",
        < 172800 => $"{(int)span.TotalHours} h",
        _ => $"{(int)span.TotalDays} days",
    };
}
