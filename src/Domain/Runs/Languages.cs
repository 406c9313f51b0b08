namespace Sandbox.Audited.Domain.Runs;

public static class Languages
{
    public const string Python = "python";
    public const string JavaScript = "javascript";
    public const string Shell = "shell";

    public static readonly IReadOnlyList<string> All = [Python, JavaScript, Shell];

    // Names people type; the canonical name is what gets recorded.
    private static readonly Dictionary<string, string> Aliases = new(StringComparer.OrdinalIgnoreCase)
    {
        ["python"] = Python, ["python3"] = Python, ["py"] = Python,
        ["javascript"] = JavaScript, ["js"] = JavaScript, ["node"] = JavaScript, ["nodejs"] = JavaScript,
        ["shell"] = Shell, ["sh"] = Shell,
    };

    public static string? Canonical(string? name) =>
        name is not null && Aliases.TryGetValue(name.Trim(), out var canonical) ? canonical : null;
}
