using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Domain.Tests.Runs;

public sealed class NodeIdTests
{
    [Theory]
    [InlineData("sandbox-1")]
    [InlineData("api-0-1f2e3d4c")]
    [InlineData("host.example.internal")]
    [InlineData("node_7")]
    [InlineData("9lives")]
    public void APlainNameIsANodeId(string id) => Assert.Null(NodeIds.Problem(id));

    [Fact]
    public void AnIdOfTheLongestAllowedLengthIsANodeId() => Assert.Null(NodeIds.Problem(new string('n', NodeIds.MaxLength)));

    [Theory]
    [InlineData(null, "empty")]
    [InlineData("", "empty")]
    [InlineData("..", "begin with")]
    [InlineData(".hidden", "begin with")]
    [InlineData("-rf", "begin with")]
    [InlineData("/tmp", "begin with")]
    [InlineData("a/b", "'/'")]
    [InlineData("a/../../etc", "'/'")]
    [InlineData("a\\b", "'\\'")]
    [InlineData("node\nforged", "U+000A")]
    [InlineData("node\0", "U+0000")]
    [InlineData("nœud", "U+0153")]
    [InlineData("a b", "' '")]
    [InlineData("a,b", "','")]
    [InlineData("a=b", "'='")]
    public void AnIdTheNodeCannotUseIsRefusedSayingWhy(string? id, string why) =>
        Assert.Contains(why, NodeIds.Problem(id), StringComparison.Ordinal);

    [Fact]
    public void AnIdTooLongIsRefusedWithItsLength() =>
        Assert.Contains("2000 characters", NodeIds.Problem(new string('n', 2000)), StringComparison.Ordinal);

    [Theory]
    [InlineData("node\nforged", "'node\\u000aforged'")]
    [InlineData("a\\b", "'a\\\\b'")]
    [InlineData("nœud", "'n\\u0153ud'")]
    [InlineData("sandbox-1", "'sandbox-1'")]
    public void AQuotedIdIsOneLineOfPrintableAscii(string id, string quoted) => Assert.Equal(quoted, NodeIds.Quote(id));

    [Fact]
    public void AQuotedLongIdIsCut() => Assert.Equal(NodeIds.MaxLength + 3, NodeIds.Quote(new string('n', 5000)).Length);
}
