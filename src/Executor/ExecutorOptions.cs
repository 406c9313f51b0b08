namespace Sandbox.Audited.Executor;

public sealed class ExecutorOptions
{
    public const string Section = "Executor";

    /// <summary>Labels every container; the reaper only ever removes containers of its own node.</summary>
    public string NodeId { get; set; } = Environment.MachineName;

    public string DockerEndpoint { get; set; } = "unix:///var/run/docker.sock";

    /// <summary>OCI runtime: "runc" (default) or e.g. "runsc" for gVisor where it is installed.</summary>
    public string Runtime { get; set; } = "runc";

    /// <summary>Image per language; `sbx up` builds and tags them.</summary>
    public Dictionary<string, string> Images { get; set; } = new()
    {
        ["python"] = "sbx-python:current",
        ["javascript"] = "sbx-javascript:current",
        ["shell"] = "sbx-shell:current",
    };

    /// <summary>Started sandboxes kept ready per language; 0 disables the pool (every run is cold).</summary>
    public int PoolSizePerLanguage { get; set; } = 2;

    /// <summary>Extra time beyond the run's timeout before the service kills the container itself.</summary>
    public int BackstopGraceMs { get; set; } = 2000;

    // What a run may bring back from /tmp/work/out: files, bytes per file, bytes in all.
    public int MaxArtifacts { get; set; } = 64;
    public long MaxArtifactBytes { get; set; } = 64L * 1024 * 1024;
    public long MaxArtifactsTotalBytes { get; set; } = 64L * 1024 * 1024;

    /// <summary>Where artifacts are spooled between the sandbox and the evidence store (deleted once stored).</summary>
    public string SpoolDirectory { get; set; } = Path.Combine(Path.GetTempPath(), "sbx-spool");

    public int ReapIntervalSeconds { get; set; } = 60;

    public int DockerCallTimeoutMs { get; set; } = 15000;

    /// <summary>
    /// Where a run's outcome is kept (one fsynced file per run, under a folder per node) when the audit store cannot take it;
    /// a background worker commits it when PostgreSQL returns. Must survive a restart of the service.
    /// </summary>
    public string JournalDirectory { get; set; } = "/var/lib/sandbox-audited/journal";

    /// <summary>Attempts to remove a container (1 s, 2 s, 4 s … 30 s apart) before the reaper takes it over.</summary>
    public int RemovalAttempts { get; set; } = 8;
}
