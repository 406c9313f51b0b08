namespace Sandbox.Audited.Domain.Runs;

public static class RunStatus
{
    public const string Pending = "pending";
    public const string Running = "running";
    public const string Succeeded = "succeeded";
    public const string Failed = "failed";
    public const string TimedOut = "timed_out";
    public const string MemoryExceeded = "memory_exceeded";
    public const string PidsExhausted = "pids_exhausted";
    public const string OutputTruncated = "output_truncated";
    public const string Denied = "denied";
    public const string Rejected = "rejected";
    public const string Error = "error";
    public const string Abandoned = "abandoned";
    public const string Refused = "refused";

    /// <summary>
    /// One status per run; the limit that bit wins over the exit code, in order of severity, so that
    /// a script killed by the timeout is never reported as merely "failed".
    /// </summary>
    public static string FromExit(SandboxExited exit, bool outputTruncated) =>
        exit switch
        {
            { TimedOut: true } => TimedOut,
            { OomKilled: true } => MemoryExceeded,
            { PidsLimitHit: true } => PidsExhausted,
            _ when outputTruncated => OutputTruncated,
            { ExitCode: 0 } => Succeeded,
            _ => Failed,
        };
}
