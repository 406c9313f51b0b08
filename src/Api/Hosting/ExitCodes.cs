using Npgsql;
using Sandbox.Audited.Audit.Queue;
using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Domain.Runtimes;
using Sandbox.Audited.Domain.Startup;

namespace Sandbox.Audited.Api.Hosting;

/// <summary>
/// The service's exit codes, for supervisors (systemd's RestartPreventExitStatus=, an orchestrator's restart policy). Values
/// follow sysexits(3), so that they mean something to tools that know nothing of this service; which failure gets which
/// code is decided in Domain (StartFailures).
/// </summary>
public static class ExitCodes
{
    /// <summary>Stopped as asked (SIGTERM, SIGINT), runs drained.</summary>
    public const int Stopped = 0;

    /// <summary>Not started: Executor:NodeId is held by another live process (EX_CONFIG: give each process its own id).</summary>
    public const int NodeIdInUse = StartFailures.ExConfig;

    /// <summary>Not started: Executor:NodeId is not a name the node can use for its journal folder, labels and logs (EX_CONFIG).</summary>
    public const int NodeIdUnusable = StartFailures.ExConfig;

    /// <summary>Stopped: another process took this process's node id while it was stalled or cut off (EX_TEMPFAIL).</summary>
    public const int NodeIdLost = 75;

    /// <summary>
    /// Whether this process is the service itself. Hosted in another program (a test's WebApplicationFactory) a failed start
    /// goes on, as an exception, to that program, which started the host.
    /// </summary>
    public static bool IsThisProgram => System.Reflection.Assembly.GetEntryAssembly() == typeof(ExitCodes).Assembly;

    public static int Run(WebApplication app)
    {
        try
        {
            app.StartAsync().GetAwaiter().GetResult();
        }
        catch
        {
            // A start that failed (an address in use) stops what did start before the host is disposed: its background
            // services then end as stopped. Disposed without a stop, each canceled one is logged as a failure with a trace.
            using var grace = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            try
            {
                app.StopAsync(grace.Token).GetAwaiter().GetResult();
            }
            catch (Exception)
            {
                // The failure to start is what the caller reports; one while stopping after it adds nothing to it.
            }
            app.DisposeAsync().AsTask().GetAwaiter().GetResult();
            throw;
        }
        app.WaitForShutdown();
        app.DisposeAsync().AsTask().GetAwaiter().GetResult();
        return Environment.ExitCode;
    }

    /// <summary>Says on stderr why the service does not start, in one line, and gives the code to exit with.</summary>
    public static int NotStarting(int code, string why)
    {
        Console.Error.WriteLine($"sandbox-audited: not starting (exit code {code}): {why}");
        return code;
    }

    /// <summary>
    /// A start that failed: one line on stderr saying what to fix and the exit code for it, instead of an unhandled exception
    /// that aborts the process (134) with a stack trace. Only a defect (nothing known) adds its stack trace.
    /// </summary>
    public static int NotStarting(Exception e)
    {
        var (kind, cause) = Classify(e);
        // PostgreSQL's own message text, without Npgsql's appended detail lines (position, routine).
        var text = cause is PostgresException pg ? $"{pg.SqlState}: {pg.MessageText}" : cause.Message;
        Console.Error.WriteLine(StartFailures.Line(kind, text));
        if (kind == StartFailureKind.Unexpected)
            Console.Error.WriteLine(e);
        return StartFailures.ExitCode(kind);
    }

    /// <summary>The host's own "Hosting failed to start" line with its stack trace, left out when NotStarting says it in one line.</summary>
    public static bool IsKnownStartFailureLog(Serilog.Events.LogEvent log) =>
        log.Exception is { } e && log.MessageTemplate.Text == "Hosting failed to start" && Classify(e).Kind != StartFailureKind.Unexpected;

    /// <summary>The outermost exception in the chain that says why, and what kind of failure it is.</summary>
    public static (StartFailureKind Kind, Exception Cause) Classify(Exception e)
    {
        for (var x = e; x is not null; x = x is AggregateException { InnerExceptions.Count: 1 } one ? one.InnerExceptions[0] : x.InnerException)
            if (KindOf(x) is { } kind)
                return (kind, x);
        return (StartFailureKind.Unexpected, e);
    }

    private static StartFailureKind? KindOf(Exception e) => e switch
    {
        NodeIdInUseException => StartFailureKind.NodeIdInUse,
        InvalidSettingException or PolicyLoadException or RuntimeCatalogueException or Microsoft.Extensions.Options.OptionsValidationException
            => StartFailureKind.InvalidSetting,
        // 28P01 password, 28000 no pg_hba.conf entry or no such role, 3D000 no such database: a setting, not an outage.
        PostgresException { SqlState: "28P01" or "28000" or "3D000" } => StartFailureKind.DatabaseLoginRefused,
        // An undefined table, function, schema or column, or a privilege a migration grants: migrations not applied.
        PostgresException { SqlState: "42P01" or "42883" or "3F000" or "42703" or "42501" } => StartFailureKind.SchemaBehind,
        // 57P03 starting up, 53300 too many connections, 57P01 shut down meanwhile.
        PostgresException { SqlState: "57P03" or "53300" or "57P01" or "57P02" } => StartFailureKind.DatabaseUnreachable,
        PostgresException => null,
        NpgsqlException { IsTransient: true } or NpgsqlException { InnerException: System.Net.Sockets.SocketException or TimeoutException }
            => StartFailureKind.DatabaseUnreachable,
        // Kestrel's own message names the address: "Failed to bind to address http://…: address already in use."
        IOException { InnerException: Microsoft.AspNetCore.Connections.AddressInUseException } or Microsoft.AspNetCore.Connections.AddressInUseException
            => StartFailureKind.AddressInUse,
        _ => null,
    };
}
