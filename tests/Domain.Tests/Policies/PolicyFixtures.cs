using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Domain.Tests.Policies;

internal static class PolicyFixtures
{
    public const string Header = """
        defaults: { timeoutMs: 10000, memoryMb: 128, cpus: 1, pids: 64, outputBytes: 65536, tmpfsMb: 16 }
        ceilings: { timeoutMs: 60000, memoryMb: 512, cpus: 2, pids: 256, outputBytes: 4194304, tmpfsMb: 128 }

        """;

    public static string PoliciesDirectory
    {
        get
        {
            // Walk up from the test binaries to the repository's policies/ folder.
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "policies", "default.yaml")))
                    return Path.Combine(dir.FullName, "policies");
            throw new DirectoryNotFoundException("policies/default.yaml not found above " + AppContext.BaseDirectory);
        }
    }

    public static PolicyBundle Bundle(string rules) => PolicyBundle.FromFiles([("main.yaml", Header + rules)]);

    /// <summary>The repository's shipped bundle (the service reads the same files through its PolicyDirectory).</summary>
    public static PolicyBundle Shipped() => PolicyBundle.FromFiles(Read(PoliciesDirectory, ""));

    /// <summary>The shipped bundle's test cases (policies/tests).</summary>
    public static IReadOnlyList<(string Path, string Content)> ShippedTests() => Read(Path.Combine(PoliciesDirectory, "tests"), "tests/");

    private static List<(string Path, string Content)> Read(string directory, string prefix) =>
        Directory.EnumerateFiles(directory).Where(PolicyBundle.IsPolicyFile)
            .Select(p => (prefix + Path.GetFileName(p), File.ReadAllText(p))).ToList();

    public static PolicyInput Input(
        string language = "python",
        string classification = "internal",
        string code = "print(1)",
        RequestedLimits? limits = null,
        params string[] roles) =>
        new(new Caller("alice", "acme", roles), language, classification, limits ?? RequestedLimits.None, code, 0, 0, 0);

    public static PolicyLoadException LoadError(params (string Path, string Content)[] files) =>
        Assert.Throws<PolicyLoadException>(() => PolicyBundle.FromFiles(files));
}
