using Sandbox.Audited.Domain.Sandboxes;

namespace Sandbox.Audited.Domain.Tests.Sandboxes;

public sealed class SandboxKillTests
{
    [Theory]
    [InlineData(137, false, true)]
    [InlineData(137, true, false)]
    [InlineData(1, false, false)]
    [InlineData(0, false, false)]
    [InlineData(null, false, false)]
    public void EventLogIsAskedOnlyForAKillTheStateDoesNotExplain(int? exitCode, bool stateOomKilled, bool asks) =>
        Assert.Equal(asks, SandboxKill.AsksEventLog(exitCode, stateOomKilled));

    [Theory]
    [InlineData(false, null, false)]
    [InlineData(false, false, false)]
    [InlineData(false, true, true)]
    [InlineData(true, null, true)]
    [InlineData(true, false, true)]
    public void OomKillIsRecordedOnlyWhenARecordSaysSo(bool stateOomKilled, bool? eventLogged, bool oomKilled) =>
        Assert.Equal(oomKilled, SandboxKill.OomKilled(stateOomKilled, eventLogged));
}
