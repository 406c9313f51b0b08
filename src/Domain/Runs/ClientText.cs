namespace Sandbox.Audited.Domain.Runs;

/// <summary>
/// How a client's own string is echoed in an error and in the record of its refusal: at most a few dozen characters, with
/// control characters (NUL among them, which a jsonb event cannot hold) shown as '?', and its length when cut. A request
/// whose language is three megabytes of noise is refused with a short error and a short record, not an echo of its size.
/// </summary>
public static class ClientText
{
    public const int MaxEcho = 64;

    /// <summary>Longest recorded error: the service's own words around at most a few echoes.</summary>
    public const int MaxError = 1024;

    public static string Echo(string? value) => Clean(value, MaxEcho);

    /// <summary>Control characters as '?'; cut after max characters, saying how long it was.</summary>
    public static string Clean(string? value, int max)
    {
        value ??= "";
        var kept = value.Length <= max ? value : value[..max];
        var cleaned = string.Create(kept.Length, kept, (span, source) =>
        {
            for (var i = 0; i < source.Length; i++)
                span[i] = char.IsControl(source[i]) && source[i] != '\n' ? '?' : source[i];
        });
        return value.Length <= max ? cleaned : $"{cleaned}… ({value.Length} characters)";
    }
}
