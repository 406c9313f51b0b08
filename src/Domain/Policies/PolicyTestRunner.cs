using System.Globalization;
using System.Text;
using Sandbox.Audited.Domain.Runs;
using YamlDotNet.RepresentationModel;

namespace Sandbox.Audited.Domain.Policies;

/// <summary>What a test case expects; null members are not checked.</summary>
public sealed record ExpectedDecision(
    string Decision,
    IReadOnlyList<string> RuleIds,
    LimitCaps? Limits,
    IReadOnlyList<string>? Findings,
    IReadOnlyList<string> ReasonsContaining,
    string? Isolation = null);

public sealed record PolicyTestCase(string File, int Line, string Name, PolicyInput Input, ExpectedDecision Expect);

public sealed record PolicyTestCaseResult(PolicyTestCase Case, PolicyDecision Actual, IReadOnlyList<string> Differences)
{
    public bool Passed => Differences.Count == 0;
}

/// <summary>Outcome of running a bundle's test cases: per-case results, rules no case exercised, and load errors.</summary>
public sealed record PolicyTestResult(
    string? BundleDigest,
    IReadOnlyList<PolicyTestCaseResult> Cases,
    IReadOnlyList<string> UncoveredRuleIds,
    IReadOnlyList<PolicyError> Errors)
{
    public bool Success => Errors.Count == 0 && UncoveredRuleIds.Count == 0 && Cases.Count > 0 && Cases.All(c => c.Passed);

    /// <summary>A human-readable report, suitable for a command's output.</summary>
    public string Report => PolicyTestRunner.FormatReport(this);
}

/// <summary>
/// Runs policy test cases (policies/tests/*.yaml) against a bundle. Fails on any wrong decision and
/// on any rule that no case exercises (appears in no case's deciding rule ids or findings).
/// </summary>
public static class PolicyTestRunner
{
    private static readonly string[] FileKeys = ["cases"];
    private static readonly string[] CaseKeys = ["name", "input", "expect"];
    private static readonly string[] InputKeys =
        ["subject", "tenant", "roles", "language", "classification", "limits", "code", "argCount", "fileCount", "stdinBytes", "runtime", "isolation"];
    private static readonly string[] ExpectKeys = ["decision", "ruleIds", "limits", "findings", "reasons", "isolation"];

    public static PolicyTestResult Run(PolicyBundle bundle, IEnumerable<(string Path, string Content)> testFiles)
    {
        var errors = new List<PolicyError>();
        var cases = testFiles
            .OrderBy(f => f.Path, StringComparer.Ordinal)
            .SelectMany(f => ParseFile(f.Path, f.Content, errors))
            .ToList();
        if (cases.Count == 0 && errors.Count == 0)
            errors.Add(new PolicyError("tests/", 0, 0, "no test cases found; add policies/tests/*.yaml with 'cases'"));

        var results = cases.Select(c => Check(c, bundle.Evaluate(c.Input))).ToList();
        var exercised = results.SelectMany(r => r.Actual.RuleIds.Concat(r.Actual.Findings)).ToHashSet(StringComparer.Ordinal);
        var uncovered = bundle.Rules.Select(r => r.Id).Where(id => !exercised.Contains(id)).ToList();
        return new PolicyTestResult(bundle.Digest, results, uncovered, errors);
    }

    public static PolicyTestCaseResult Check(PolicyTestCase testCase, PolicyDecision actual)
    {
        var expect = testCase.Expect;
        var diffs = new List<string>();
        if (expect.Decision != actual.Decision)
            diffs.Add($"decision: expected {expect.Decision}, got {actual.Decision}");
        CompareSets(diffs, "ruleIds", expect.RuleIds, actual.RuleIds);
        if (expect.Findings is { } findings) CompareSets(diffs, "findings", findings, actual.Findings);
        if (expect.Limits is { } limits)
            foreach (var field in LimitField.All)
                if (field.Cap(limits) is { } want && want != field.Run(actual.Limits))
                    diffs.Add($"limits.{field.Name}: expected {field.Format(want)}, got {field.Format(field.Run(actual.Limits))}");
        if (expect.Isolation is { } isolation && isolation != actual.Isolation)
            diffs.Add($"isolation: expected {isolation}, got {actual.Isolation ?? "none (denied)"}");
        foreach (var text in expect.ReasonsContaining)
            if (!actual.Reasons.Any(r => r.Contains(text, StringComparison.Ordinal)))
                diffs.Add($"reasons: expected one containing \"{text}\"");
        if (diffs.Count > 0)
            diffs.Add($"actual reasons: {string.Join(" | ", actual.Reasons)}");
        return new PolicyTestCaseResult(testCase, actual, diffs);
    }

    internal static string FormatReport(PolicyTestResult result)
    {
        var report = new StringBuilder();
        if (result.BundleDigest is { } digest) report.Append("bundle ").Append(digest).Append('\n');
        foreach (var error in result.Errors) report.Append("ERROR ").Append(error).Append('\n');
        foreach (var r in result.Cases)
        {
            report.Append(r.Passed ? "PASS " : "FAIL ").Append(r.Case.Name)
                .Append(" (").Append(r.Case.File).Append(':').Append(r.Case.Line.ToString(CultureInfo.InvariantCulture)).Append(")\n");
            foreach (var diff in r.Differences) report.Append("     ").Append(diff).Append('\n');
        }
        foreach (var id in result.UncoveredRuleIds)
            report.Append("UNCOVERED rule ").Append(id).Append(": no test case exercises it\n");
        var passed = result.Cases.Count(c => c.Passed);
        report.Append(CultureInfo.InvariantCulture,
            $"{(result.Success ? "OK" : "FAILED")}: {passed}/{result.Cases.Count} cases passed, " +
            $"{result.UncoveredRuleIds.Count} uncovered rule(s), {result.Errors.Count} error(s)\n");
        return report.ToString();
    }

    private static void CompareSets(List<string> diffs, string what, IReadOnlyList<string> expected, IReadOnlyList<string> actual)
    {
        var want = expected.Order(StringComparer.Ordinal).ToList();
        var got = actual.Distinct().Order(StringComparer.Ordinal).ToList();
        if (!want.SequenceEqual(got))
            diffs.Add($"{what}: expected [{string.Join(", ", want)}], got [{string.Join(", ", got)}]");
    }

    private static List<PolicyTestCase> ParseFile(string path, string content, List<PolicyError> errors)
    {
        var reader = new YamlReader(path, errors);
        var cases = new List<PolicyTestCase>();
        if (reader.ParseRoot(content) is not { } root || YamlReader.IsNull(root)) return cases;
        if (reader.Fields(root, "a policy test file", FileKeys) is not { } top) return cases;
        if (!top.TryGetValue("cases", out var casesNode)) return cases;
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var node in reader.Sequence(casesNode, "'cases'"))
        {
            if (ParseCase(reader, node) is not { } testCase) continue;
            if (!names.Add(testCase.Name)) reader.Error(node, $"duplicate case name '{testCase.Name}'");
            else cases.Add(testCase);
        }
        return cases;
    }

    private static PolicyTestCase? ParseCase(YamlReader reader, YamlNode node)
    {
        if (reader.Fields(node, "a test case", CaseKeys) is not { } fields) return null;
        var name = fields.TryGetValue("name", out var nameNode) ? reader.String(nameNode, "case name") : null;
        if (name is null)
        {
            if (nameNode is null) reader.Error(node, "every test case needs a 'name'");
            return null;
        }
        var what = $"case '{name}'";
        var input = Require(reader, node, fields, "input", what) is { } i ? ParseInput(reader, i, what) : null;
        var expect = Require(reader, node, fields, "expect", what) is { } e ? ParseExpect(reader, e, what) : null;
        return input is null || expect is null ? null : new PolicyTestCase(reader.File, (int)node.Start.Line, name, input, expect);
    }

    private static PolicyInput? ParseInput(YamlReader reader, YamlNode node, string what)
    {
        if (reader.Fields(node, $"{what} input", InputKeys) is not { } f) return null;
        string Text(string key, string fallback) =>
            f.TryGetValue(key, out var n) ? reader.String(n, $"{what} input.{key}") ?? fallback : fallback;
        int Count(string key) =>
            f.TryGetValue(key, out var n) ? (int)(reader.Integer(n, $"{what} input.{key}", 0, int.MaxValue) ?? 0) : 0;

        var language = Require(reader, node, f, "language", what) is { } l ? reader.String(l, $"{what} input.language") : null;
        var limits = f.TryGetValue("limits", out var limitsNode) ? reader.Limits(limitsNode, $"{what} input.limits") : null;
        var code = "";
        if (f.TryGetValue("code", out var codeNode))
        {
            if (codeNode is YamlScalarNode { Value: { } c }) code = c;
            else reader.Error(codeNode, $"{what} input.code must be a string (use '|' for several lines)");
        }
        if (language is null) return null;
        return new PolicyInput(
            new Caller(Text("subject", "test-subject"), Text("tenant", "test-tenant"),
                f.TryGetValue("roles", out var roles) ? reader.Strings(roles, $"{what} input.roles") : []),
            language,
            Text("classification", Classification.Default),
            limits is null ? RequestedLimits.None : ToRequested(limits),
            code,
            Count("argCount"),
            Count("fileCount"),
            f.TryGetValue("stdinBytes", out var stdin) ? reader.Integer(stdin, $"{what} input.stdinBytes", 0) ?? 0 : 0,
            f.TryGetValue("runtime", out var runtime) ? reader.String(runtime, $"{what} input.runtime") : null,
            f.TryGetValue("isolation", out var isolation) ? reader.String(isolation, $"{what} input.isolation") : null);
    }

    private static ExpectedDecision? ParseExpect(YamlReader reader, YamlNode node, string what)
    {
        if (reader.Fields(node, $"{what} expect", ExpectKeys) is not { } f) return null;
        string? decision = null;
        if (Require(reader, node, f, "decision", what) is { } d)
        {
            decision = reader.String(d, $"{what} expect.decision");
            if (decision is not null and not Decision.Allow and not Decision.Deny)
            {
                reader.Error(d, $"{what} expect.decision must be '{Decision.Allow}' or '{Decision.Deny}'");
                decision = null;
            }
        }
        var ruleIds = Require(reader, node, f, "ruleIds", what) is { } r ? reader.Strings(r, $"{what} expect.ruleIds") : null;
        if (decision is null || ruleIds is null) return null;
        return new ExpectedDecision(
            decision,
            ruleIds,
            f.TryGetValue("limits", out var limits) ? LimitField.ToCaps(reader.Limits(limits, $"{what} expect.limits")) : null,
            f.TryGetValue("findings", out var findings) ? reader.Strings(findings, $"{what} expect.findings") : null,
            f.TryGetValue("reasons", out var reasons) ? reader.Strings(reasons, $"{what} expect.reasons") : [],
            f.TryGetValue("isolation", out var isolation) ? reader.String(isolation, $"{what} expect.isolation") : null);
    }

    private static YamlNode? Require(YamlReader reader, YamlNode parent, Dictionary<string, YamlNode> fields, string key, string what)
    {
        if (fields.TryGetValue(key, out var node)) return node;
        reader.Error(parent, $"{what} needs '{key}'");
        return null;
    }

    private static RequestedLimits ToRequested(double?[] v) =>
        new((int?)v[0], (int?)v[1], v[2], (int?)v[3], (int?)v[4], (int?)v[5]);
}
