using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Domain.Tests.Runs;

public sealed class InputAndArtifactTests
{
    private static readonly RunLimits Limits = new(10000, 128, 1, 64, 65536, TmpfsMb: 16);

    [Fact]
    public void Base64FilesAreDecodedToTheirExactBytes()
    {
        byte[] bytes = [0, 255, 1, 254, 0];
        var (valid, _) = RunRequestValidation.Validate(new RunRequest("python", "print(1)",
            Files: [new RunFile("blob.bin", Convert.ToBase64String(bytes), "base64")]));

        var file = valid!.Files.Single();
        Assert.Equal(5, file.Bytes);
        Assert.Equal(Sandbox.Audited.Domain.Hashing.Sha256Hex.Of(bytes), file.Sha256);
    }

    [Theory]
    [InlineData("not base64!", "base64", "not valid base64")]
    [InlineData("x", "hex", "use \"utf8\"")]
    public void BadEncodingsAreRefusedNamingTheFile(string content, string encoding, string expected)
    {
        var (_, rejection) = RunRequestValidation.Validate(new RunRequest("python", "print(1)", Files: [new RunFile("a.bin", content, encoding)]));

        Assert.Contains(rejection!.Errors, e => e.Contains(expected, StringComparison.Ordinal) && e.Contains("files[0]", StringComparison.Ordinal));
    }

    [Fact]
    public void UploadedFilesCountAgainstTheConfiguredCapsAsTooLarge()
    {
        var uploaded = new[] { new InputFile("big.csv", 2048, new string('0', 64), _ => Task.FromResult<Stream>(Stream.Null)) };

        var (_, rejection) = RunRequestValidation.Validate(new RunRequest("python", "print(1)"), null, new InputLimits(1024, 4096, 4), uploaded);

        Assert.Equal(RejectionKind.TooLarge, rejection!.Kind);
        Assert.Contains(rejection.Errors, e => e.Contains("1024 bytes", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("out")]
    [InlineData("main.py")]
    [InlineData("../x")]
    [InlineData("a\u0007b")]
    public void ReservedAndUnsafeNamesAreRefused(string name)
    {
        var (_, rejection) = RunRequestValidation.Validate(new RunRequest("python", "print(1)", Files: [new RunFile(name, "x")]));

        Assert.NotNull(rejection);
    }

    [Fact]
    public void InputsMustFitTheSandboxTmpWithRoomToSpare()
    {
        var (fits, _) = RunRequestValidation.Validate(new RunRequest("python", "print(1)",
            Files: [new RunFile("a.bin", Convert.ToBase64String(new byte[14 * 1024 * 1024]), "base64")]), null, InputLimits.Default);
        var (over, _) = RunRequestValidation.Validate(new RunRequest("python", "print(1)",
            Files: [new RunFile("a.bin", Convert.ToBase64String(new byte[15 * 1024 * 1024 + 1]), "base64")]), null, InputLimits.Default);

        Assert.Null(InputBudget.Problem(fits!, Limits));
        Assert.Contains("'limits.tmpfsMb' of at least 17", InputBudget.Problem(over!, Limits));
    }

    [Theory]
    [InlineData("summary.json", "application/json")]
    [InlineData("tables/q1.CSV", "text/csv")]
    [InlineData("report", "application/octet-stream")]
    [InlineData("dir.json/data", "application/octet-stream")]
    [InlineData(".json", "application/octet-stream")]
    public void MediaTypesComeFromTheExtensionOnly(string name, string expected) =>
        Assert.Equal(expected, MediaTypes.For(name));

    [Theory]
    [InlineData(null, "stored")]
    [InlineData("file_cap", "exceeded")]
    [InlineData("count_cap", "exceeded")]
    [InlineData("total_cap", "exceeded")]
    [InlineData("symlink", "skipped")]
    [InlineData("fifo", "skipped")]
    public void SupervisorReasonsMapToAStatus(string? reason, string status) =>
        Assert.Equal(status, ArtifactStatus.Of(reason));
}
