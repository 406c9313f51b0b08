using System.Text;
using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Domain.Text;

namespace Sandbox.Audited.Api.Policies;

/// <summary>The policy directory on disk, read into the pure bundle and test runner (Domain reads no files).</summary>
public static class PolicyDirectory
{
    /// <summary>Loads every *.yaml / *.yml file at the top of <paramref name="directory"/> (subfolders such as tests/ are ignored).</summary>
    public static PolicyBundle Load(string directory)
    {
        if (!Directory.Exists(directory))
            throw new PolicyLoadException([new PolicyError(directory, 0, 0, "policy directory does not exist")]);
        var errors = new List<PolicyError>();
        var files = new List<(string, string)>();
        foreach (var path in Directory.EnumerateFiles(directory).Where(PolicyBundle.IsPolicyFile))
        {
            var name = Path.GetFileName(path);
            try
            {
                files.Add((name, Utf8Text.Strict.GetString(File.ReadAllBytes(path))));
            }
            catch (DecoderFallbackException)
            {
                errors.Add(new PolicyError(name, 0, 0, "file is not valid UTF-8"));
            }
        }
        if (errors.Count > 0) throw new PolicyLoadException(errors);
        return PolicyBundle.FromFiles(files);
    }

    /// <summary>Loads the bundle and runs the cases in its tests/ folder; never throws for bad policy or test files.</summary>
    public static PolicyTestResult RunTests(string directory)
    {
        PolicyBundle bundle;
        try
        {
            bundle = Load(directory);
        }
        catch (PolicyLoadException e)
        {
            return new PolicyTestResult(null, [], [], e.Errors);
        }
        var tests = Path.Combine(directory, "tests");
        var testFiles = Directory.Exists(tests)
            ? Directory.EnumerateFiles(tests).Where(PolicyBundle.IsPolicyFile)
                .Select(p => (Path: "tests/" + Path.GetFileName(p), Content: File.ReadAllText(p)))
                .ToList()
            : [];
        return PolicyTestRunner.Run(bundle, testFiles);
    }
}
