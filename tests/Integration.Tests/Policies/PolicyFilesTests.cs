using Sandbox.Audited.Api.Policies;
using Sandbox.Audited.Domain.Policies;

namespace Sandbox.Audited.Tests.Policies;

/// <summary>Reading a policy directory from disk (the service's side; the bundle itself is pure Domain code).</summary>
public sealed class PolicyFilesTests : IDisposable
{
    private const string Header = """
        defaults: { timeoutMs: 10000, memoryMb: 128, cpus: 1, pids: 64, outputBytes: 65536, tmpfsMb: 16 }
        ceilings: { timeoutMs: 60000, memoryMb: 512, cpus: 2, pids: 256, outputBytes: 4194304, tmpfsMb: 128 }

        """;

    private readonly DirectoryInfo _directory = Directory.CreateTempSubdirectory("policy-load-");

    public void Dispose() => _directory.Delete(recursive: true);

    [Fact]
    public void LoadReadsTopLevelYamlFilesOnly()
    {
        File.WriteAllText(Path.Combine(_directory.FullName, "a.yaml"), Header);
        File.WriteAllText(Path.Combine(_directory.FullName, "b.yml"), "rules:\n  - id: all\n    effect: permit\n");
        File.WriteAllText(Path.Combine(_directory.FullName, "notes.txt"), "not policy");
        Directory.CreateDirectory(Path.Combine(_directory.FullName, "tests"));
        File.WriteAllText(Path.Combine(_directory.FullName, "tests", "x.yaml"), "cases: []\n");

        var bundle = PolicyDirectory.Load(_directory.FullName);

        Assert.Equal(["a.yaml", "b.yml"], bundle.Files.Select(f => f.Path));
        Assert.Equal(["all"], bundle.Rules.Select(r => r.Id));
    }

    [Fact]
    public void AFileThatIsNotUtf8IsAnErrorNamingIt()
    {
        File.WriteAllText(Path.Combine(_directory.FullName, "a.yaml"), Header);
        File.WriteAllBytes(Path.Combine(_directory.FullName, "b.yaml"), [0x72, 0x75, 0xff, 0xfe]);

        var error = Assert.Single(Assert.Throws<PolicyLoadException>(() => PolicyDirectory.Load(_directory.FullName)).Errors);

        Assert.Equal(("b.yaml", "file is not valid UTF-8"), (error.File, error.Message));
    }

    [Fact]
    public void AnInvalidBundleIsReportedNotThrown()
    {
        File.WriteAllText(Path.Combine(_directory.FullName, "a.yaml"), Header + "rules:\n  - id: x\n    effect: permit\n    network: true\n");

        var result = PolicyDirectory.RunTests(_directory.FullName);

        Assert.False(result.Success);
        Assert.Contains("ERROR a.yaml:6:5:", result.Report, StringComparison.Ordinal);
    }

    [Fact]
    public void TheShippedBundlePassesItsOwnTests()
    {
        var result = PolicyDirectory.RunTests(Path.Combine(Infrastructure.TestEnvironment.RepoRoot, "policies"));

        Assert.True(result.Success, result.Report);
        Assert.NotNull(result.BundleDigest);
    }
}
