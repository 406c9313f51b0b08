namespace Sandbox.Audited.Domain.Tests.Runs;

public sealed class TokenRefundTests
{
    [Theory]
    [InlineData(500, true)]  // a defect
    [InlineData(503, true)]  // audit store down, no sandbox, input spool full
    [InlineData(504, true)]
    [InlineData(200, false)]
    [InlineData(202, false)] // accepted or recording: the run is the caller's
    [InlineData(400, false)] // the caller's own mistake
    [InlineData(403, false)]
    [InlineData(429, false)] // capacity: refunding would let a subject that keeps its tenant busy send without bound
    public void OnlyTheServicesOwnFailuresGiveTheTokenBack(int status, bool givenBack) =>
        Assert.Equal(givenBack, Sandbox.Audited.Domain.Runs.TokenBucket.GivenBack(status));
}
