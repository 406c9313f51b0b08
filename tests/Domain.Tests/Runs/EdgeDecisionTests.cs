using System.Net;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Domain.Tests.Runs;

public sealed class EdgeDecisionTests
{
    private static readonly RunLimits Ceilings = new(60000, 512, 2, 256, 4194304, 128);

    [Theory]
    [InlineData(1e-300, false)]
    [InlineData(0.001, false)]
    [InlineData(0.009, false)]
    [InlineData(0.01, true)]
    [InlineData(0.29, true)]
    [InlineData(0.555, false)]
    [InlineData(2, true)]
    [InlineData(2.01, false)]
    [InlineData(double.NaN, false)]
    public void CpusMustBeHundredthsWithinFloorAndCeiling(double cpus, bool ok) =>
        Assert.Equal(ok, !LimitFloors.Problems(new RequestedLimits(Cpus: cpus), Ceilings).Any());

    [Fact]
    public void ValidatedCpusAreTheExactHundredth()
    {
        var (valid, _) = RunRequestValidation.Validate(new RunRequest("shell", "true", Limits: new RequestedLimits(Cpus: 0.29)), Ceilings);
        Assert.Equal("0.29", valid!.Limits.Cpus!.Value.ToString(System.Globalization.CultureInfo.InvariantCulture));
    }

    [Fact]
    public void ErrorListIsBounded()
    {
        var (_, rejection) = RunRequestValidation.Validate(new RunRequest("shell", "true", Args: Enumerable.Repeat("a\0", 500).ToList()));
        Assert.Equal(RunRequestValidation.MaxErrorsListed + 1, rejection!.Errors.Count);
        Assert.Contains("481 more", rejection.Errors[^1]);
    }

    [Theory]
    [InlineData("127.0.0.1", AddressKind.Loopback)]
    [InlineData("::1", AddressKind.Loopback)]
    [InlineData("::ffff:127.0.0.1", AddressKind.Loopback)]
    [InlineData("10.0.0.1", AddressKind.Internal)]
    [InlineData("172.31.255.255", AddressKind.Internal)]
    [InlineData("192.168.0.1", AddressKind.Internal)]
    [InlineData("169.254.169.254", AddressKind.Internal)]
    [InlineData("100.64.0.1", AddressKind.Internal)]
    [InlineData("0.0.0.0", AddressKind.Internal)]
    [InlineData("fe80::1", AddressKind.Internal)]
    [InlineData("fd00::1", AddressKind.Internal)]
    [InlineData("::ffff:10.0.0.1", AddressKind.Internal)]
    [InlineData("93.184.216.34", AddressKind.Public)]
    [InlineData("2606:4700::1111", AddressKind.Public)]
    public void CallbackAddressesAreClassified(string address, AddressKind kind) =>
        Assert.Equal(kind, CallbackAddresses.Classify(IPAddress.Parse(address)));

    [Theory]
    [InlineData(0.0, 1, 60, 60)]
    [InlineData(0.5, 1, 60, 30)]
    [InlineData(0.99, 20, 1, 1)]
    [InlineData(0.0, 2, 60, 30)]
    public void ARefusedCallerWaitsUntilAWholeTokenHasRefilled(double tokens, int perPeriod, int periodSeconds, int expectedSeconds) =>
        Assert.Equal(TimeSpan.FromSeconds(expectedSeconds), TokenBucket.RetryAfter(tokens, perPeriod, TimeSpan.FromSeconds(periodSeconds)));
}
