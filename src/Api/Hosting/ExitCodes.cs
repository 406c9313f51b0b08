namespace Sandbox.Audited.Api.Hosting;

/// <summary>
/// The service's exit codes, for supervisors (systemd's RestartPreventExitStatus=, an orchestrator's restart policy). Values
/// follow sysexits(3), so that they mean something to tools that know nothing of this service.
/// </summary>
public static class ExitCodes
{
    /// <summary>Stopped as asked (SIGTERM, SIGINT), runs drained.</summary>
    public const int Stopped = 0;

    /// <summary>Not started: Executor:NodeId is held by another live process (EX_CONFIG: give each process its own id).</summary>
    public const int NodeIdInUse = 78;

    /// <summary>Not started: Executor:NodeId is not a name the node can use for its journal folder, labels and logs (EX_CONFIG).</summary>
    public const int NodeIdUnusable = 78;

    /// <summary>Stopped: another process took this process's node id while it was stalled or cut off (EX_TEMPFAIL).</summary>
    public const int NodeIdLost = 75;

    /// <summary>
    /// Runs the host and turns a refused node id into its exit code with a plain message on stderr (the critical log line
    /// came first), instead of an unhandled exception that aborts the process (134) with a stack trace. Hosted in another
    /// program (a test's WebApplicationFactory) the exception goes on to that program, which started the host.
    /// </summary>
    public static int Run(WebApplication app)
    {
        try
        {
            app.Run();
        }
        catch (Exception e) when (InUse(e) is { } inUse && System.Reflection.Assembly.GetEntryAssembly() == typeof(ExitCodes).Assembly)
        {
            return NotStarting(NodeIdInUse, inUse.Message);
        }
        return Environment.ExitCode;
    }

    /// <summary>Says on stderr why the service does not start, in one line, and gives the code to exit with.</summary>
    public static int NotStarting(int code, string why)
    {
        Console.Error.WriteLine($"sandbox-audited: not starting (exit code {code}): {why}");
        return code;
    }

    private static Sandbox.Audited.Audit.Queue.NodeIdInUseException? InUse(Exception? e)
    {
        for (; e is not null; e = e.InnerException)
            if (e is Sandbox.Audited.Audit.Queue.NodeIdInUseException inUse)
                return inUse;
            else if (e is AggregateException { InnerExceptions.Count: 1 } one)
                return InUse(one.InnerExceptions[0]);
        return null;
    }
}
