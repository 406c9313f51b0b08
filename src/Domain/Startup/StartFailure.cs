namespace Sandbox.Audited.Domain.Startup;

/// <summary>A setting the service cannot start with (missing, out of range, a file it names unreadable); its message says what to fix.</summary>
public sealed class InvalidSettingException(string message, Exception? inner = null) : InvalidOperationException(message, inner);

/// <summary>Why a start failed, as far as an operator must act on it.</summary>
public enum StartFailureKind
{
    /// <summary>A setting is missing or wrong, or a file a setting names (policy bundle, runtime catalogue, key) is invalid.</summary>
    InvalidSetting,

    /// <summary>Executor:NodeId is held by another live process.</summary>
    NodeIdInUse,

    /// <summary>PostgreSQL answered but refused the login (password, pg_hba.conf, no such role or database).</summary>
    DatabaseLoginRefused,

    /// <summary>The database lacks what this binary needs (a table, function or grant a migration adds).</summary>
    SchemaBehind,

    /// <summary>PostgreSQL did not answer (down, starting up, out of connections, cut off).</summary>
    DatabaseUnreachable,

    /// <summary>The address to listen on is taken by another process.</summary>
    AddressInUse,

    /// <summary>Anything else: a defect of the service.</summary>
    Unexpected,
}

/// <summary>
/// What a failed start exits with, following sysexits(3), so that a supervisor acts on the code alone: EX_CONFIG (78) when
/// the same start would fail again until an operator changes something (systemd's RestartPreventExitStatus=78 stops the
/// loop), EX_UNAVAILABLE (69) when a service it needs is down and a later start may succeed (restarted), EX_SOFTWARE (70)
/// for a defect (restarted, with its stack trace).
/// </summary>
public static class StartFailures
{
    public const int ExConfig = 78;
    public const int ExUnavailable = 69;
    public const int ExSoftware = 70;

    public static int ExitCode(StartFailureKind kind) => kind switch
    {
        StartFailureKind.InvalidSetting or StartFailureKind.NodeIdInUse or StartFailureKind.DatabaseLoginRefused
            or StartFailureKind.SchemaBehind or StartFailureKind.AddressInUse => ExConfig,
        StartFailureKind.DatabaseUnreachable => ExUnavailable,
        _ => ExSoftware,
    };

    /// <summary>Whether a supervisor should start the service again by itself: only when nothing needs fixing by hand.</summary>
    public static bool RestartHelps(StartFailureKind kind) => ExitCode(kind) != ExConfig;

    /// <summary>The one line an operator reads: what failed (the cause's own text, on one line) and what to do about it.</summary>
    public static string Line(StartFailureKind kind, string cause)
    {
        var what = OneLine(cause);
        var fix = kind switch
        {
            StartFailureKind.DatabaseLoginRefused =>
                "PostgreSQL refused the service's login: check the user, password and database in ConnectionStrings:Sandbox and PostgreSQL's pg_hba.conf.",
            StartFailureKind.SchemaBehind =>
                "The database schema is older than this binary, or the login is not the service's own: apply the migrations "
                + "(`Sandbox.Audited.Api migrate`, or `./sbx up`) and check the user in ConnectionStrings:Sandbox, then start again.",
            StartFailureKind.DatabaseUnreachable =>
                "PostgreSQL cannot be reached: start it or check the host and port in ConnectionStrings:Sandbox; a supervisor may simply start the service again.",
            StartFailureKind.AddressInUse =>
                "Another process listens on this address: stop it, or give this process another one (--urls or ASPNETCORE_URLS).",
            StartFailureKind.Unexpected => "This is a defect of the service; the details follow.",
            _ => null,
        };
        return $"sandbox-audited: not starting (exit code {ExitCode(kind)}): {what}" + (fix is null ? "" : " " + fix);
    }

    // A heading that ends in a colon runs on into its first item; further lines are joined with "; ".
    private static string OneLine(string text)
    {
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var line = new System.Text.StringBuilder();
        foreach (var part in lines)
            line.Append(line.Length == 0 ? "" : line[^1] == ':' ? " " : "; ").Append(part);
        return line.ToString().TrimEnd('.') + ".";
    }
}
