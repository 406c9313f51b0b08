namespace Sandbox.Audited.Domain.Runs;

/// <summary>
/// Which Executor:NodeId a node can use. The id names the node's journal folder (a path segment), labels its containers,
/// goes into log lines, NOTIFY payloads and sandbox.nodes, so it is a plain name: 1–128 ASCII letters, digits, '.', '-' or
/// '_', beginning with a letter or digit (never "..", "/", a control character or a flag). Host names pass as they are.
/// </summary>
public static class NodeIds
{
    public const int MaxLength = 128;

    /// <summary>Why the id cannot be used, or null when it can.</summary>
    public static string? Problem(string? id)
    {
        if (string.IsNullOrEmpty(id))
            return "it is empty; set Executor:NodeId to a name of its own for this process";
        if (id.Length > MaxLength)
            return $"it is {id.Length} characters long; at most {MaxLength} are allowed";
        if (!char.IsAsciiLetterOrDigit(id[0]))
            return "it must begin with an ASCII letter or digit";
        foreach (var c in id)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_'))
                return $"it contains {Describe(c)}; only ASCII letters, digits, '.', '-' and '_' are allowed";
        return null;
    }

    /// <summary>The id as a log line or message may quote it: printable ASCII kept, everything else escaped, cut after MaxLength.</summary>
    public static string Quote(string? id)
    {
        var text = id ?? "";
        var shown = text.Length > MaxLength ? text[..MaxLength] : text;
        var escaped = string.Concat(shown.Select(c => c is >= ' ' and <= '~' and not '\\' ? c.ToString() : c == '\\' ? "\\\\" : $"\\u{(int)c:x4}"));
        return $"'{escaped}{(text.Length > MaxLength ? "…" : "")}'";
    }

    private static string Describe(char c) => c is >= ' ' and <= '~' ? $"'{c}'" : $"the character U+{(int)c:X4}";
}
