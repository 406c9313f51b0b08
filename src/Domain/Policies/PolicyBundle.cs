using System.Text;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Domain.Text;

namespace Sandbox.Audited.Domain.Policies;

/// <summary>
/// A loaded, validated set of policy files. Immutable; <see cref="Evaluate"/> is deterministic, so
/// the same bundle (same <see cref="Digest"/>) and input always give the same decision.
/// </summary>
public sealed class PolicyBundle
{
    private readonly IReadOnlyList<CompiledFinding> findings;

    private PolicyBundle(IReadOnlyList<PolicyFile> files, ParsedBundle parsed)
    {
        Files = files;
        Digest = ComputeDigest(files.Select(f => (f.Path, f.Sha256)));
        Rules = parsed.Rules;
        Defaults = parsed.Defaults;
        Ceilings = parsed.Ceilings;
        findings = parsed.Findings;
    }

    /// <summary>SHA-256 (lowercase hex) of the bundle's file list; see <see cref="ComputeDigest"/>.</summary>
    public string Digest { get; }

    /// <summary>The bundle's files, sorted by path (ordinal).</summary>
    public IReadOnlyList<PolicyFile> Files { get; }

    /// <summary>Every rule (permits, forbids, findings) in evaluation order: by file path, then as written.</summary>
    public IReadOnlyList<PolicyRule> Rules { get; }

    public RunLimits Defaults { get; }

    public RunLimits Ceilings { get; }

    /// <summary>Loads every *.yaml / *.yml file at the top of <paramref name="directory"/> (subfolders such as tests/ are ignored).</summary>
    public static PolicyBundle Load(string directory)
    {
        if (!Directory.Exists(directory))
            throw new PolicyLoadException([new PolicyError(directory, 0, 0, "policy directory does not exist")]);

        var strictUtf8 = Utf8Text.Strict;
        var errors = new List<PolicyError>();
        var files = new List<(string, string)>();
        foreach (var path in Directory.EnumerateFiles(directory).Where(IsPolicyFile))
        {
            var name = Path.GetFileName(path);
            try
            {
                files.Add((name, strictUtf8.GetString(File.ReadAllBytes(path))));
            }
            catch (DecoderFallbackException)
            {
                errors.Add(new PolicyError(name, 0, 0, "file is not valid UTF-8"));
            }
        }
        if (errors.Count > 0) throw new PolicyLoadException(errors);
        return FromFiles(files);
    }

    /// <summary>Builds a bundle from in-memory files (tests, or replaying a decision from stored content).</summary>
    public static PolicyBundle FromFiles(IReadOnlyList<(string Path, string Content)> files)
    {
        var errors = new List<PolicyError>();
        if (files.Count == 0) errors.Add(new PolicyError("(bundle)", 0, 0, "the bundle has no policy files (*.yaml or *.yml)"));
        foreach (var group in files.GroupBy(f => NormalizePath(f.Path), StringComparer.Ordinal).Where(g => g.Count() > 1))
            errors.Add(new PolicyError(group.Key, 0, 0, "the same path appears more than once"));
        foreach (var (path, _) in files.Where(f => NormalizePath(f.Path).Any(char.IsControl) || string.IsNullOrWhiteSpace(f.Path)))
            errors.Add(new PolicyError(path, 0, 0, "a policy file path must be non-empty and free of control characters"));
        if (errors.Count > 0) throw new PolicyLoadException(errors);

        var sorted = files
            .Select(f => (Path: NormalizePath(f.Path), Content: StripBom(f.Content)))
            .OrderBy(f => f.Path, StringComparer.Ordinal)
            .Select(f => new PolicyFile(f.Path, Sha256Hex.Of(f.Content), f.Content))
            .ToList();
        return new PolicyBundle(sorted, PolicyParser.Parse(sorted));
    }

    /// <summary>
    /// The digest layout: for each file, sorted by path with ordinal comparison, the UTF-8 line
    /// "{path}\t{sha256 of the file's UTF-8 content, lowercase hex}\n"; the digest is the SHA-256
    /// (lowercase hex) of those lines concatenated.
    /// </summary>
    public static string ComputeDigest(IEnumerable<(string Path, string Sha256)> files)
    {
        var text = new StringBuilder();
        foreach (var (path, sha) in files.OrderBy(f => f.Path, StringComparer.Ordinal))
            text.Append(path).Append('\t').Append(sha).Append('\n');
        return Sha256Hex.Of(text.ToString());
    }

    public PolicyDecision Evaluate(PolicyInput input) => PolicyEvaluator.Evaluate(this, findings, input);

    private static bool IsPolicyFile(string path) =>
        Path.GetExtension(path).ToLowerInvariant() is ".yaml" or ".yml";

    // The same file must hash the same on every OS and whether read from disk or from storage.
    private static string NormalizePath(string path) => path.Replace('\\', '/');

    private static string StripBom(string content) => content.StartsWith('\uFEFF') ? content[1..] : content;
}
