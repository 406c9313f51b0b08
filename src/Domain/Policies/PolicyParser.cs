using System.Text.RegularExpressions;
using Sandbox.Audited.Domain.Runs;
using YamlDotNet.RepresentationModel;

namespace Sandbox.Audited.Domain.Policies;

/// <summary>A finding rule with its compiled pattern.</summary>
internal sealed record CompiledFinding(PolicyRule Rule, Regex Regex);

internal sealed record ParsedBundle(
    RunLimits Defaults,
    RunLimits Ceilings,
    IReadOnlyList<PolicyRule> Rules,
    IReadOnlyList<CompiledFinding> Findings);

/// <summary>Turns policy files into rules; reports every problem with file, line and column.</summary>
internal static class PolicyParser
{
    // Matching is linear (NonBacktracking) and code is at most 256 KiB, so a match takes milliseconds; the
    // timeout only guards against a starved machine. It is generous so that a busy host does not change a
    // decision (replay must give the same answer), and it still fails closed when it does fire.
    public static readonly TimeSpan MatchTimeout = TimeSpan.FromSeconds(2);
    private const RegexOptions FindingOptions = RegexOptions.NonBacktracking | RegexOptions.CultureInvariant;

    private static readonly string[] FileKeys = ["defaults", "ceilings", "rules", "findings"];
    private static readonly string[] RuleKeys = ["id", "effect", "description", "when", "limits", "requireIsolation"];
    private static readonly string[] FindingKeys = ["id", "description", "pattern", "action", "when"];
    private static readonly string[] WhenKeys =
    [
        "tenants", "subjects", "roles", "notRoles", "languages", "classifications",
        "limitsAbove", "argCountAbove", "fileCountAbove", "stdinBytesAbove", "runtimes",
    ];

    /// <summary>Parses files already sorted by path; throws <see cref="PolicyLoadException"/> listing every error.</summary>
    public static ParsedBundle Parse(IReadOnlyList<PolicyFile> files)
    {
        var errors = new List<PolicyError>();
        var rules = new List<PolicyRule>();
        var findings = new List<CompiledFinding>();
        (double?[] Values, YamlNode Node, string File)? defaults = null, ceilings = null;
        var ids = new Dictionary<string, PolicyRule>(StringComparer.Ordinal);

        foreach (var file in files)
        {
            var reader = new YamlReader(file.Path, errors);
            if (reader.ParseRoot(file.Content) is not { } root || YamlReader.IsNull(root)) continue;
            if (reader.Fields(root, "a policy file", FileKeys) is not { } top) continue;

            if (top.TryGetValue("defaults", out var defaultsNode))
                SetOnce(reader, ref defaults, defaultsNode, "defaults");
            if (top.TryGetValue("ceilings", out var ceilingsNode))
                SetOnce(reader, ref ceilings, ceilingsNode, "ceilings");

            var parsed = new List<(PolicyRule Rule, YamlNode IdNode, Regex? Regex)>();
            if (top.TryGetValue("rules", out var rulesNode))
                foreach (var node in reader.Sequence(rulesNode, "'rules'"))
                    if (ParseRule(reader, node) is { } rule) parsed.Add((rule.Rule, rule.IdNode, null));
            if (top.TryGetValue("findings", out var findingsNode))
                foreach (var node in reader.Sequence(findingsNode, "'findings'"))
                    if (ParseFinding(reader, node) is { } finding) parsed.Add(finding);

            foreach (var (rule, idNode, regex) in parsed)
            {
                if (ids.TryGetValue(rule.Id, out var first))
                {
                    reader.Error(idNode, $"duplicate rule id '{rule.Id}' (first defined at {first.File}:{first.Line})");
                    continue;
                }
                ids[rule.Id] = rule;
                rules.Add(rule);
                if (regex is not null) findings.Add(new CompiledFinding(rule, regex));
            }
        }

        // A file that failed to parse may well hold the defaults; only then is "missing" worth saying.
        var reportMissing = errors.Count == 0;
        var defaultLimits = Complete(errors, defaults, "defaults", files, reportMissing);
        var ceilingLimits = Complete(errors, ceilings, "ceilings", files, reportMissing);
        if (defaultLimits is not null && ceilingLimits is not null)
            CheckBelowCeilings(errors, defaults!.Value.File, defaults.Value.Node.Start.Line, "defaults",
                LimitField.All.Select(f => (double?)f.Run(defaultLimits)).ToArray(), ceilingLimits);
        if (ceilingLimits is not null)
            foreach (var rule in rules.Where(r => r.Kind == RuleKind.Permit))
                CheckBelowCeilings(errors, rule.File, rule.Line, $"rule '{rule.Id}' limits",
                    LimitField.All.Select(f => f.Cap(rule.Limits)).ToArray(), ceilingLimits);

        if (errors.Count > 0) throw new PolicyLoadException(errors);
        return new ParsedBundle(defaultLimits!, ceilingLimits!, rules, findings);
    }

    private static void SetOnce(YamlReader reader, ref (double?[] Values, YamlNode Node, string File)? slot, YamlNode node, string what)
    {
        if (slot is { } existing)
        {
            reader.Error(node, $"'{what}' is already set in {existing.File}:{existing.Node.Start.Line}; set it in one file only");
            return;
        }
        slot = (reader.Limits(node, $"'{what}'"), node, reader.File);
    }

    // Defaults and ceilings must name every limit, so an effective value always exists.
    private static RunLimits? Complete(List<PolicyError> errors, (double?[] Values, YamlNode Node, string File)? slot, string what, IReadOnlyList<PolicyFile> files, bool reportMissing)
    {
        if (slot is not { } set)
        {
            if (reportMissing) errors.Add(new PolicyError(files.Count == 0 ? "(bundle)" : string.Join(", ", files.Select(f => f.Path)), 0, 0,
                $"the bundle must set '{what}' (in exactly one file) with every limit: {LimitField.Names}"));
            return null;
        }
        var missing = LimitField.All.Where((_, i) => set.Values[i] is null).Select(f => f.Name).ToList();
        if (missing.Count == 0) return LimitField.ToRunLimits(set.Values.Select(v => v!.Value).ToList());
        errors.Add(new PolicyError(set.File, (int)set.Node.Start.Line, (int)set.Node.Start.Column,
            $"'{what}' must set every limit with a positive value; missing or invalid: {string.Join(", ", missing)}"));
        return null;
    }

    private static void CheckBelowCeilings(List<PolicyError> errors, string file, long line, string what, double?[] values, RunLimits ceilings)
    {
        for (var i = 0; i < LimitField.All.Count; i++)
        {
            var field = LimitField.All[i];
            if (values[i] is { } value && value > field.Run(ceilings))
                errors.Add(new PolicyError(file, (int)line, 1,
                    $"{what}: {field.Name} {field.Format(value)} is above the global ceiling {field.Format(field.Run(ceilings))}"));
        }
    }

    private static (PolicyRule Rule, YamlNode IdNode)? ParseRule(YamlReader reader, YamlNode node)
    {
        if (reader.Fields(node, "a rule", RuleKeys) is not { } fields) return null;
        if (ParseId(reader, node, fields) is not { } id) return null;
        var what = $"rule '{id.Id}'";

        RuleKind? kind = null;
        if (!fields.TryGetValue("effect", out var effectNode))
            reader.Error(node, $"{what} needs 'effect: permit' or 'effect: forbid'");
        else
            kind = reader.String(effectNode, $"{what} effect") switch
            {
                "permit" => RuleKind.Permit,
                "forbid" => RuleKind.Forbid,
                null => null,
                var other => Fail<RuleKind>(reader, effectNode, $"{what} effect must be 'permit' or 'forbid', not '{other}'"),
            };

        var limits = LimitCaps.None;
        if (fields.TryGetValue("limits", out var limitsNode))
        {
            if (kind == RuleKind.Forbid)
                reader.Error(limitsNode, $"{what}: only a permit can carry 'limits'");
            limits = LimitField.ToCaps(reader.Limits(limitsNode, $"{what} limits"));
        }

        string? isolation = null;
        if (fields.TryGetValue("requireIsolation", out var isolationNode))
        {
            if (kind == RuleKind.Forbid)
                reader.Error(isolationNode, $"{what}: only a permit can carry 'requireIsolation'");
            else if (reader.String(isolationNode, $"{what} requireIsolation") is { } name
                     && (isolation = Runtimes.Isolation.Canonical(name)) is null)
                reader.Error(isolationNode, $"{what} requireIsolation must be one of {string.Join(", ", Runtimes.Isolation.All)}, not '{name}'");
        }

        var when = fields.TryGetValue("when", out var whenNode) ? ParseWhen(reader, whenNode, what) : RuleConditions.Any;
        if (kind is null) return null;
        return (new PolicyRule(id.Id, kind.Value, Description(reader, fields, what), when, limits, null, null,
            reader.File, (int)node.Start.Line, isolation), id.Node);
    }

    private static (PolicyRule Rule, YamlNode IdNode, Regex? Regex)? ParseFinding(YamlReader reader, YamlNode node)
    {
        if (reader.Fields(node, "a finding", FindingKeys) is not { } fields) return null;
        if (ParseId(reader, node, fields) is not { } id) return null;
        var what = $"finding '{id.Id}'";

        FindingAction? action = null;
        if (!fields.TryGetValue("action", out var actionNode))
            reader.Error(node, $"{what} needs 'action: deny' or 'action: record'");
        else
            action = reader.String(actionNode, $"{what} action") switch
            {
                "deny" => FindingAction.Deny,
                "record" => FindingAction.Record,
                null => null,
                var other => Fail<FindingAction>(reader, actionNode, $"{what} action must be 'deny' or 'record', not '{other}'"),
            };

        string? pattern = null;
        Regex? regex = null;
        if (!fields.TryGetValue("pattern", out var patternNode))
            reader.Error(node, $"{what} needs a 'pattern' (a regular expression)");
        else if ((pattern = reader.String(patternNode, $"{what} pattern")) is not null)
        {
            try
            {
                regex = new Regex(pattern, FindingOptions, MatchTimeout);
                WarmUp(regex);
            }
            catch (Exception e) when (e is ArgumentException or NotSupportedException)
            {
                reader.Error(patternNode, $"{what} pattern is not a valid regular expression (non-backtracking .NET syntax): {e.Message}");
            }
        }

        var when = fields.TryGetValue("when", out var whenNode) ? ParseWhen(reader, whenNode, what) : RuleConditions.Any;
        if (action is null || regex is null) return null;
        return (new PolicyRule(id.Id, RuleKind.Finding, Description(reader, fields, what), when, LimitCaps.None,
            pattern, action, reader.File, (int)node.Start.Line), id.Node, regex);
    }

    private static (string Id, YamlNode Node)? ParseId(YamlReader reader, YamlNode node, Dictionary<string, YamlNode> fields)
    {
        if (!fields.TryGetValue("id", out var idNode))
        {
            reader.Error(node, "every rule needs an 'id'");
            return null;
        }
        if (reader.String(idNode, "'id'") is not { } id) return null;
        if (YamlReader.IdSyntax().IsMatch(id)) return (id, idNode);
        reader.Error(idNode, $"id '{id}' must be lowercase letters, digits, '.', '_' or '-' (at most 64 characters)");
        return null;
    }

    private static string Description(YamlReader reader, Dictionary<string, YamlNode> fields, string what) =>
        fields.TryGetValue("description", out var node) ? reader.String(node, $"{what} description") ?? "" : "";

    private static RuleConditions ParseWhen(YamlReader reader, YamlNode node, string what)
    {
        if (reader.Fields(node, $"{what} 'when'", WhenKeys) is not { } fields) return RuleConditions.Any;
        IReadOnlyList<string> List(string key, Func<string, string?>? check = null) =>
            fields.TryGetValue(key, out var n) ? reader.Strings(n, $"{what} when.{key}", check) : [];

        static string? Role(string role) => YamlReader.RoleSyntax().IsMatch(role)
            ? null : $"role '{role}' must be letters, digits, '.', '_', ':' or '-'";
        static string? Language(string language) => Languages.All.Contains(language)
            ? null : $"unknown language '{language}'; use one of {string.Join(", ", Languages.All)}";
        static string? Class(string c) => Classification.All.Contains(c)
            ? null : $"unknown classification '{c}'; use one of {string.Join(", ", Classification.All)}";
        static string? Plain(string s) => s.Any(char.IsControl) ? "must not contain control characters" : null;
        // The catalogue is not part of the bundle: a rule may name a runtime before it is installed.
        static string? RuntimeId(string s) => YamlReader.IdSyntax().IsMatch(s) ? null : $"runtime '{s}' is not a runtime id";

        int? Count(string key) => fields.TryGetValue(key, out var n)
            ? (int?)reader.Integer(n, $"{what} when.{key}", 0, int.MaxValue) : null;

        return new RuleConditions(
            Tenants: List("tenants", Plain),
            Subjects: List("subjects", Plain),
            Roles: List("roles", Role),
            NotRoles: List("notRoles", Role),
            Languages: List("languages", Language),
            Classifications: List("classifications", Class),
            LimitsAbove: fields.TryGetValue("limitsAbove", out var above)
                ? LimitField.ToCaps(reader.Limits(above, $"{what} when.limitsAbove")) : LimitCaps.None,
            ArgCountAbove: Count("argCountAbove"),
            FileCountAbove: Count("fileCountAbove"),
            StdinBytesAbove: fields.TryGetValue("stdinBytesAbove", out var stdin)
                ? reader.Integer(stdin, $"{what} when.stdinBytesAbove", 0) : null,
            Runtimes: List("runtimes", RuntimeId));
    }

    private static T? Fail<T>(YamlReader reader, YamlNode node, string message) where T : struct
    {
        reader.Error(node, message);
        return null;
    }

    // The first match pays for building the automaton and JIT; on a busy host that alone can exceed the match
    // timeout and turn a first decision (and so its replay) into a timed-out "match". Pay it at load instead.
    private static void WarmUp(Regex regex)
    {
        try
        {
            regex.IsMatch("warm-up: import os\nprint('x')  # 0123456789 ~!@#$%^&*()_+{}|:\"<>?");
        }
        catch (RegexMatchTimeoutException)
        {
            // Only a warm-up; evaluation still fails closed on a timeout.
        }
    }
}
