namespace Sandbox.Audited.Domain.Runs;

/// <summary>
/// Which refusals of the audit store are for good: the one rule both the run's outcome commit and the journal worker apply,
/// so that an outcome goes to the journal unless the journal's commit would be refused the same way.
/// </summary>
public static class StoreRefusals
{
    /// <summary>Another writer took the stream's version: a conflict the journal reconciles, not a refusal of the data.</summary>
    public const string UniqueViolation = "23505";

    /// <summary>
    /// True for a SQLSTATE that refuses the data itself (class 22 data exception, 23 integrity violation other than a
    /// concurrent append's unique violation, 54 program limit): retrying the same write cannot succeed. Any other code (a
    /// read-only session during a failover 25006, a statement timeout 57014, a permission 42501, an outage) may pass later.
    /// </summary>
    public static bool IsPermanent(string? sqlState) =>
        sqlState is { Length: 5 } && sqlState[..2] is "22" or "23" or "54" && sqlState != UniqueViolation;

    /// <summary>The code as a record or a client may read it (five letters or digits only: never the store's own text).</summary>
    public static string Code(string? sqlState) =>
        sqlState is { Length: 5 } && sqlState.All(char.IsAsciiLetterOrDigit) ? $"SQLSTATE {sqlState}" : "no SQLSTATE";
}
