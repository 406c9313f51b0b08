using System.Globalization;
using System.Text.RegularExpressions;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Domain.Policies;

/// <summary>
/// Deny by default; at least one matching permit allows; any matching forbid or deny finding wins
/// over every permit. Limits are clamped, never a reason to deny.
/// </summary>
internal static class PolicyEvaluator
{
    public static PolicyDecision Evaluate(PolicyBundle bundle, IReadOnlyList<CompiledFinding> findings, PolicyInput input)
    {
        input = Normalize(input);
        var asked = LimitField.All.Select(f => f.Requested(input.Limits) ?? f.Run(bundle.Defaults)).ToArray();

        var permits = bundle.Rules.Where(r => r.Kind == RuleKind.Permit && Matches(r.When, input, asked)).ToList();
        var forbids = bundle.Rules.Where(r => r.Kind == RuleKind.Forbid && Matches(r.When, input, asked)).ToList();
        var hits = findings
            .Where(f => Matches(f.Rule.When, input, asked))
            .Select(f => Scan(f, input.Code))
            .OfType<FindingHit>()
            .ToList();
        var denyingHits = hits.Where(h => h.Rule.Action == FindingAction.Deny).ToList();
        var (limits, clampReasons) = EffectiveLimits(bundle, input.Limits, permits);
        var findingIds = hits.Select(h => h.Rule.Id).ToList();
        var findingReasons = hits.Select(h => h.Reason).ToList();

        if (forbids.Count > 0 || denyingHits.Count > 0)
        {
            var reasons = forbids.Select(r => $"forbidden by rule {r.Id}{Explain(r)}").Concat(findingReasons).ToList();
            var ids = forbids.Select(r => r.Id).Concat(denyingHits.Select(h => h.Rule.Id)).ToList();
            return new PolicyDecision(Decision.Deny, bundle.Digest, ids, limits, findingIds, reasons);
        }
        if (permits.Count == 0)
        {
            var reasons = new List<string> { $"no permit rule matched: {Describe(input)}" }.Concat(findingReasons).ToList();
            return new PolicyDecision(Decision.Deny, bundle.Digest, [], limits, findingIds, reasons);
        }
        var (isolation, isolationReasons) = GrantedIsolation(input.Isolation!, permits);
        var allowReasons = permits.Select(r => $"permitted by rule {r.Id}{Explain(r)}")
            .Concat(clampReasons).Concat(isolationReasons).Concat(findingReasons).ToList();
        return new PolicyDecision(Decision.Allow, bundle.Digest, permits.Select(r => r.Id).ToList(), limits, findingIds, allowReasons,
            input.Runtime, isolation);
    }

    public static bool Matches(RuleConditions when, PolicyInput input, IReadOnlyList<double> asked)
    {
        var roles = input.Caller.Roles;
        return AnyOrContains(when.Tenants, input.Caller.Tenant)
            && AnyOrContains(when.Subjects, input.Caller.Subject)
            && (when.Roles.Count == 0 || when.Roles.Any(roles.Contains))
            && !when.NotRoles.Any(roles.Contains)
            && AnyOrContains(when.Languages, input.Language)
            && AnyOrContains(when.Classifications, input.Classification)
            && LimitField.All.Select((f, i) => f.Cap(when.LimitsAbove) is not { } min || asked[i] > min).All(x => x)
            && (when.ArgCountAbove is not { } args || input.ArgCount > args)
            && (when.FileCountAbove is not { } files || input.FileCount > files)
            && (when.StdinBytesAbove is not { } stdin || input.StdinBytes > stdin)
            && AnyOrContains(when.Runtimes ?? [], input.Runtime!);
    }

    private static bool AnyOrContains(IReadOnlyList<string> allowed, string value) =>
        allowed.Count == 0 || allowed.Contains(value, StringComparer.Ordinal);

    // Requested value (or the bundle default), then the tightest of the permits' caps and the global ceiling.
    private static (RunLimits Limits, List<string> Reasons) EffectiveLimits(
        PolicyBundle bundle, RequestedLimits requested, IReadOnlyList<PolicyRule> permits)
    {
        var values = new double[LimitField.All.Count];
        var reasons = new List<string>();
        for (var i = 0; i < values.Length; i++)
        {
            var field = LimitField.All[i];
            var explicitValue = field.Requested(requested);
            var value = explicitValue ?? field.Run(bundle.Defaults);
            string? by = null;
            foreach (var permit in permits)
                if (field.Cap(permit.Limits) is { } cap && cap < value) (value, by) = (cap, $"rule {permit.Id}");
            if (field.Run(bundle.Ceilings) is var ceiling && ceiling < value) (value, by) = (ceiling, "the global ceiling");
            values[i] = value;
            if (by is not null)
                reasons.Add(explicitValue is { } asked
                    ? $"{field.Name} {field.Format(asked)} requested, clamped to {field.Format(value)} by {by}"
                    : $"{field.Name} default {field.Format(field.Run(bundle.Defaults))}, clamped to {field.Format(value)} by {by}");
        }
        return (LimitField.ToRunLimits(values), reasons);
    }

    // The strongest class any matching permit requires, never below what the request asked for.
    private static (string Isolation, List<string> Reasons) GrantedIsolation(string requested, IReadOnlyList<PolicyRule> permits)
    {
        var granted = requested;
        var reasons = new List<string>();
        foreach (var rule in permits.Where(r => r.RequireIsolation is not null))
        {
            if (Runtimes.Isolation.Rank(rule.RequireIsolation!) > Runtimes.Isolation.Rank(requested))
                reasons.Add($"isolation {requested} requested, raised to {rule.RequireIsolation} by rule {rule.Id}");
            granted = Runtimes.Isolation.Stronger(granted, rule.RequireIsolation!);
        }
        return (granted, reasons);
    }

    private sealed record FindingHit(PolicyRule Rule, string Reason);

    private static FindingHit? Scan(CompiledFinding finding, string code)
    {
        var rule = finding.Rule;
        var verb = rule.Action == FindingAction.Deny ? "denied by finding" : "finding (recorded)";
        try
        {
            var match = finding.Regex.Match(code);
            if (!match.Success) return null;
            var line = 1 + code.AsSpan(0, match.Index).Count('\n');
            return new FindingHit(rule, $"{verb} {rule.Id} at line {line.ToString(CultureInfo.InvariantCulture)}{Explain(rule)}");
        }
        catch (RegexMatchTimeoutException)
        {
            // Fail closed: a pattern we could not finish counts as a match.
            return new FindingHit(rule, $"{verb} {rule.Id}: matching timed out after {PolicyParser.MatchTimeout.TotalMilliseconds} ms, counted as a match");
        }
    }

    private static string Explain(PolicyRule rule) => rule.Description.Length > 0 ? $": {rule.Description}" : "";

    private static string Describe(PolicyInput input)
    {
        var roles = input.Caller.Roles.Count == 0 ? "no roles" : $"roles [{string.Join(", ", input.Caller.Roles)}]";
        var runtime = input.Runtime == input.Language ? "" : $" (runtime {input.Runtime})";
        return $"subject '{input.Caller.Subject}' of tenant '{input.Caller.Tenant}' with {roles} asked to run " +
               $"{input.Language}{runtime} on {input.Classification} data";
    }

    // Aliases and casing must not slip past a rule written with canonical names.
    private static PolicyInput Normalize(PolicyInput input) => input with
    {
        Language = Languages.Canonical(input.Language) ?? input.Language,
        Classification = input.Classification.Trim().ToLowerInvariant(),
        Code = input.Code ?? "",
        Limits = input.Limits ?? RequestedLimits.None,
        Caller = input.Caller with { Roles = input.Caller.Roles ?? [] },
        Runtime = string.IsNullOrWhiteSpace(input.Runtime) ? Languages.Canonical(input.Language) ?? input.Language : input.Runtime.Trim(),
        Isolation = Runtimes.Isolation.Canonical(input.Isolation) ?? Runtimes.Isolation.Standard,
    };
}
