using System.Globalization;
using System.Text.RegularExpressions;
using YamlDotNet.Core;
using Sandbox.Audited.Domain.Runs;
using YamlDotNet.RepresentationModel;

namespace Sandbox.Audited.Domain.Policies;

/// <summary>
/// Reads YAML through the representation model so every error can name file, line and column.
/// Collects errors instead of throwing, so one load reports every problem at once.
/// </summary>
internal sealed partial class YamlReader(string file, List<PolicyError> errors)
{
    // Keys people may try to add; the schema has no such fields, and the message says why.
    private static readonly HashSet<string> PrivilegeKeys = new(StringComparer.OrdinalIgnoreCase)
    {
        "network", "networkMode", "net", "privileged", "readOnlyRootfs", "writableRootfs", "writableRoot",
        "rootfs", "capAdd", "capabilities", "user", "runtime", "seccomp", "volumes", "mounts", "devices",
    };

    public string File => file;

    /// <summary>Parses one file into its single document's root node, or null (with an error) on a syntax error.</summary>
    public YamlNode? ParseRoot(string content)
    {
        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(content));
        }
        catch (YamlException e)
        {
            errors.Add(new PolicyError(file, (int)e.Start.Line, (int)e.Start.Column, Describe(e)));
            return null;
        }
        if (stream.Documents.Count > 1)
        {
            Error(stream.Documents[1].RootNode, "a file holds one YAML document; found more than one");
            return null;
        }
        return stream.Documents.Count == 0 ? null : stream.Documents[0].RootNode;
    }

    public void Error(YamlNode node, string message) =>
        errors.Add(new PolicyError(file, (int)node.Start.Line, (int)node.Start.Column, message));

    public void FileError(string message) => errors.Add(new PolicyError(file, 0, 0, message));

    /// <summary>Returns a mapping's entries by key, reporting non-mappings, unknown keys and non-scalar keys.</summary>
    public Dictionary<string, YamlNode>? Fields(YamlNode node, string what, params string[] allowed)
    {
        // "when:" with nothing after it reads as null; treat it as an empty mapping.
        if (IsNull(node)) return [];
        if (node is not YamlMappingNode mapping)
        {
            Error(node, $"{what} must be a mapping (key: value)");
            return null;
        }
        var fields = new Dictionary<string, YamlNode>(StringComparer.Ordinal);
        foreach (var (keyNode, value) in mapping.Children)
        {
            if (keyNode is not YamlScalarNode { Value: { } key })
            {
                Error(keyNode, $"keys in {what} must be plain strings");
                continue;
            }
            if (!allowed.Contains(key, StringComparer.Ordinal))
            {
                Error(keyNode, PrivilegeKeys.Contains(key)
                    ? $"'{key}' is not allowed in {what}: no policy can grant network access, privileges or a writable root filesystem"
                    : $"unknown key '{key}' in {what}; allowed keys: {string.Join(", ", allowed)}");
                continue;
            }
            fields[key] = value;
        }
        return fields;
    }

    public IReadOnlyList<YamlNode> Sequence(YamlNode node, string what)
    {
        if (node is YamlSequenceNode sequence) return sequence.Children.ToList();
        if (IsNull(node)) return [];
        Error(node, $"{what} must be a list");
        return [];
    }

    public string? String(YamlNode node, string what)
    {
        if (node is YamlScalarNode { Value: { } value } scalar && !IsNull(scalar) && value.Trim().Length > 0)
            return value.Trim();
        Error(node, $"{what} must be a non-empty string");
        return null;
    }

    /// <summary>A list of strings; a single string is accepted as a list of one.</summary>
    public IReadOnlyList<string> Strings(YamlNode node, string what, Func<string, string?>? check = null)
    {
        var items = node is YamlScalarNode && !IsNull(node) ? [node] : Sequence(node, what);
        var result = new List<string>();
        foreach (var item in items)
        {
            if (String(item, $"each entry of {what}") is not { } value) continue;
            if (check?.Invoke(value) is { } problem) { Error(item, $"{what}: {problem}"); continue; }
            if (!result.Contains(value, StringComparer.Ordinal)) result.Add(value);
        }
        return result;
    }

    public long? Integer(YamlNode node, string what, long min, long max = long.MaxValue)
    {
        if (node is YamlScalarNode { Value: { } text } && !IsQuotedOrNull(node)
            && long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var value))
        {
            if (value >= min && value <= max) return value;
            Error(node, $"{what} must be between {min} and {max}; got {value}");
            return null;
        }
        Error(node, $"{what} must be an integer");
        return null;
    }

    public double? Number(YamlNode node, string what, double min, double max)
    {
        if (node is YamlScalarNode { Value: { } text } && !IsQuotedOrNull(node)
            && double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) && double.IsFinite(value))
        {
            if (value >= min && value <= max) return value;
            Error(node, $"{what} must be from {min.ToString(CultureInfo.InvariantCulture)} to {max.ToString(CultureInfo.InvariantCulture)}; got {text}");
            return null;
        }
        Error(node, $"{what} must be a number");
        return null;
    }

    /// <summary>Reads a mapping of limit name → value; every value must be at least its floors (LimitFloors), CPUs in hundredths.</summary>
    public double?[] Limits(YamlNode node, string what)
    {
        var values = new double?[LimitField.All.Count];
        if (Fields(node, what, [.. LimitField.All.Select(f => f.Name)]) is not { } fields) return values;
        for (var i = 0; i < LimitField.All.Count; i++)
        {
            var field = LimitField.All[i];
            if (!fields.TryGetValue(field.Name, out var valueNode)) continue;
            values[i] = field.IsInteger
                ? Integer(valueNode, $"{what}.{field.Name} (an integer)", (long)field.Min, int.MaxValue)
                : Number(valueNode, $"{what}.{field.Name} (a number of CPUs)", field.Min, 1024);
            if (!field.IsInteger && values[i] is { } cpus && !LimitFloors.IsHundredths(cpus))
            {
                Error(valueNode, $"{what}.{field.Name} must have at most two decimals (CPUs are enforced in hundredths)");
                values[i] = null;
            }
        }
        return values;
    }

    public static bool IsNull(YamlNode node) =>
        node is YamlScalarNode { Style: ScalarStyle.Plain, Value: null or "" or "~" or "null" or "Null" or "NULL" };

    private static bool IsQuotedOrNull(YamlNode node) =>
        IsNull(node) || node is YamlScalarNode { Style: ScalarStyle.SingleQuoted or ScalarStyle.DoubleQuoted };

    private static string Describe(YamlException e) => e.Message.StartsWith("Duplicate key ", StringComparison.Ordinal)
        ? $"duplicate key '{e.Message["Duplicate key ".Length..]}'"
        : $"YAML syntax: {e.Message}";

    [GeneratedRegex("^[a-z0-9][a-z0-9._-]{0,63}$")]
    public static partial Regex IdSyntax();

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
    public static partial Regex RoleSyntax();
}
