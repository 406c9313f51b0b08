using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Domain.Tests.Runs;

public sealed class ReproductionTests
{
    private static OutputRecorded Output(string stdout, string stderr) =>
        new(Guid.Empty, new StreamOutput(stdout, 1, 1, false, "utf8", "", Stored: true), new StreamOutput(stderr, 0, 0, false, "utf8", "", Stored: true), DateTimeOffset.UnixEpoch);

    private static ArtifactRecorded Artifact(string name, string? sha) =>
        new(Guid.Empty, name, 1, sha, "text/plain", sha is null ? ArtifactStatus.Skipped : ArtifactStatus.Stored, null, DateTimeOffset.UnixEpoch);

    [Fact]
    public void EqualDigestsAreIdentical()
    {
        var comparison = Reproduction.Compare(Output("a", "e"), Output("a", "e"), [Artifact("r.json", "x")], [Artifact("r.json", "x")]);

        Assert.True(comparison.Identical);
        Assert.Empty(comparison.Differs);
        Assert.Equal(["stdout", "stderr", "artifact:r.json"], comparison.Outputs.Select(o => o.Output));
    }

    [Fact]
    public void EachDifferingOutputIsNamed()
    {
        var comparison = Reproduction.Compare(Output("a", "e"), Output("b", "e"),
            [Artifact("same", "s"), Artifact("gone", "g"), Artifact("unstored", null)], [Artifact("same", "s"), Artifact("new", "n"), Artifact("unstored", null)]);

        Assert.False(comparison.Identical);
        Assert.Equal(["stdout", "artifact:gone", "artifact:new", "artifact:unstored"], comparison.Differs);
    }

    [Fact]
    public void AMissingOutcomeDiffers() =>
        Assert.Equal(["stdout", "stderr"], Reproduction.Compare(Output("a", "e"), null).Differs);
}
