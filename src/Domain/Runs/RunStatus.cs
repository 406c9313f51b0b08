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

    /// <summary>Not stored: the answer's status while the outcome waits in the node's journal for the audit store to return.</summary>
    public const string Recording = "recording";

    /// <summary>
    /// One status per run; the limit that bit wins over the exit code, so that a script killed by the
    /// timeout is never reported as merely "failed". The most specific cause wins: an OOM kill or an
    /// exhausted pids limit explains a run that then also hit its deadline (a fork bomb spins until the
    /// timeout), so they come before timed_out; every flag stays recorded in SandboxExited. The flags count any process of
    /// the run: a child taken by the OOM killer makes the run memory_exceeded even when the program then exits 0 (kept as
    /// its exit code).
    /// </summary>
    public static string FromExit(SandboxExited exit, bool outputTruncated) =>
        exit switch
        {
            { OomKilled: true } => MemoryExceeded,
            { PidsLimitHit: true } => PidsExhausted,
            { TimedOut: true } => TimedOut,
            _ when outputTruncated => OutputTruncated,
            { ExitCode: 0 } => Succeeded,
            _ => Failed,
        };
}
