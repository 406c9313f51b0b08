using Sandbox.Audited.Domain.Runtimes;
using static Sandbox.Audited.Domain.Tests.Policies.PolicyFixtures;

namespace Sandbox.Audited.Domain.Tests.Runtimes;

public sealed class RuntimeCatalogueTests
{
    private static RuntimeCatalogue Shipped()
    {
        var directory = Path.Combine(Path.GetDirectoryName(PoliciesDirectory)!, "runtimes");
        return RuntimeCatalogue.Parse(Directory.EnumerateFiles(directory, "*.yaml")
            .Select(p => (Path.GetFileName(p), File.ReadAllText(p))).ToList());
    }

    [Fact]
    public void TheShippedCatalogueHasTheLeanRuntimesAndPythonData()
    {
        var catalogue = Shipped();

        Assert.Equal(["javascript", "python", "python-data", "shell"], catalogue.Ids);
        Assert.Equal(["python3-minimal", "libpython3.11-stdlib"], catalogue.Find("python")!.Packages);
        Assert.Contains("python3-pandas", catalogue.Find("python-data")!.Packages);
        Assert.Empty(catalogue.Find("shell")!.Packages);
        Assert.All(catalogue.All, r => Assert.Equal("bookworm", r.Base));
    }

    [Fact]
    public void ARequestWithoutARuntimeGetsItsLanguagesLeanOne()
    {
        var (runtime, error) = Shipped().Resolve("python", null);

        Assert.Null(error);
        Assert.Equal("python", runtime!.Id);
    }

    [Fact]
    public void UnknownRuntimesAndOtherLanguagesAreRefusedWithTheChoices()
    {
        var catalogue = Shipped();

        Assert.Equal("Unknown runtime 'r': use one of javascript, python, python-data, shell.", catalogue.Resolve("python", "r").Error);
        Assert.Equal("Runtime 'python-data' runs python, not shell; for shell use one of: shell.", catalogue.Resolve("shell", "python-data").Error);
    }

    [Fact]
    public void EveryProblemOfACatalogueFileIsReportedWithItsLine()
    {
        var error = Assert.Throws<RuntimeCatalogueException>(() => RuntimeCatalogue.Parse(
        [
            ("ruby.yaml", "id: ruby\nlanguage: ruby\nbase: bookworm\npackages: [ruby]\n"),
            ("python-x.yaml", "id: python-y\nlanguage: python\nbase: trixie\npackages: [Bad_Name]\nnetwork: true\n"),
        ]));

        var messages = error.Errors.Select(e => e.ToString()).ToList();
        Assert.Contains("ruby.yaml:2:11: unknown language 'ruby'; use one of python, javascript, shell", messages);
        Assert.Contains(messages, m => m.StartsWith("python-x.yaml:1:5: id 'python-y' must equal the file name 'python-x'", StringComparison.Ordinal));
        Assert.Contains("python-x.yaml:3:7: base must be 'bookworm'", messages);
        Assert.Contains(messages, m => m.Contains("'Bad_Name' is not a Debian package name", StringComparison.Ordinal));
        Assert.Contains(messages, m => m.StartsWith("python-x.yaml:5:1: 'network' is not allowed in a runtime", StringComparison.Ordinal));
    }
}
