using Sandbox.Audited.Domain.Startup;

namespace Sandbox.Audited.Domain.Tests.Startup;

public sealed class StartFailuresTests
{
    [Theory]
    [InlineData(StartFailureKind.InvalidSetting, 78)]
    [InlineData(StartFailureKind.NodeIdInUse, 78)]
    [InlineData(StartFailureKind.DatabaseLoginRefused, 78)]
    [InlineData(StartFailureKind.SchemaBehind, 78)]
    [InlineData(StartFailureKind.AddressInUse, 78)]
    [InlineData(StartFailureKind.DatabaseUnreachable, 69)]
    [InlineData(StartFailureKind.Unexpected, 70)]
    public void EachFailureHasItsSysexitsCode(StartFailureKind kind, int code) => Assert.Equal(code, StartFailures.ExitCode(kind));

    [Fact]
    public void OnlyWhatAnOperatorMustFixIsNotRestarted()
    {
        var notRestarted = Enum.GetValues<StartFailureKind>().Where(k => !StartFailures.RestartHelps(k)).Select(StartFailures.ExitCode).Distinct();
        Assert.Equal([78], notRestarted); // the systemd unit's RestartPreventExitStatus=78
        Assert.True(StartFailures.RestartHelps(StartFailureKind.DatabaseUnreachable));
    }

    [Fact]
    public void TheLineIsOneLineWithTheCauseAndWhatToDo()
    {
        var line = StartFailures.Line(StartFailureKind.InvalidSetting, "The policy bundle is invalid (2 error(s)):\na.yaml:1:1: bad\nb.yaml:2:3: worse\n");

        Assert.Equal("sandbox-audited: not starting (exit code 78): The policy bundle is invalid (2 error(s)): a.yaml:1:1: bad; b.yaml:2:3: worse.", line);
    }

    [Fact]
    public void ADependencyDownSaysThatARestartMaySucceed()
    {
        var line = StartFailures.Line(StartFailureKind.DatabaseUnreachable, "Failed to connect to 127.0.0.1:5432");

        Assert.StartsWith("sandbox-audited: not starting (exit code 69): Failed to connect to 127.0.0.1:5432. PostgreSQL cannot be reached", line);
        Assert.DoesNotContain('\n', line);
    }
}
