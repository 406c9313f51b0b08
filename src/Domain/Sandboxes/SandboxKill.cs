namespace Sandbox.Audited.Domain.Sandboxes;

/// <summary>
/// Whether the memory limit killed a sandbox that ended without its supervisor's report, from the engine's two records of
/// it: the container's state (OOMKilled) and the engine's event log (an `oom` event during the container's life). The
/// state misses an OOM kill whose event the engine handled after the exit (seen under gVisor, ≈10 ms after `die`); the
/// log still has it. A reason is recorded only when one of them says so, never inferred from exit status 137 alone.
/// </summary>
public static class SandboxKill
{
    /// <summary>128 + SIGKILL: the status of a container killed as a whole, by the memory limit or by the service.</summary>
    public const int KilledStatus = 137;

    /// <summary>The event log is asked only when the sandbox was killed and its state does not already give the reason.</summary>
    public static bool AsksEventLog(int? exitCode, bool stateOomKilled) => exitCode == KilledStatus && !stateOomKilled;

    /// <summary>OOM-killed when either record says so; an event log that could not be read (null) says nothing.</summary>
    public static bool OomKilled(bool stateOomKilled, bool? oomEventLogged) => stateOomKilled || oomEventLogged == true;
}
