using Sandbox.Audited.Domain.Runtimes;

namespace Sandbox.Audited.Executor;

public sealed class ExecutorOptions
{
    public const string Section = "Executor";

    /// <summary>Labels every container; the reaper only ever removes containers of its own node.</summary>
    public string NodeId { get; set; } = Environment.MachineName;

    public string DockerEndpoint { get; set; } = "unix:///var/run/docker.sock";

    /// <summary>OCI runtime of the "standard" isolation class: "runc" (default).</summary>
    public string Runtime { get; set; } = "runc";

    /// <summary>OCI runtime of the "strong" isolation class: gVisor's runsc, registered with the engine by `sbx up`.</summary>
    public string StrongRuntime { get; set; } = "runsc";

    /// <summary>Image per runtime id where it is not sbx-&lt;id&gt;:current (what `sbx up` builds from the catalogue).</summary>
    public Dictionary<string, string> Images { get; set; } = new();

    /// <summary>
    /// Started sandboxes kept ready for each lean runtime (python, javascript, shell) in the standard class, unless
    /// WarmPools says otherwise; 0 disables those pools (every run is cold).
    /// </summary>
    public int PoolSizePerLanguage { get; set; } = 2;

    /// <summary>Warm sandboxes per runtime id and isolation class, e.g. WarmPools:python-data:strong = 1; an entry wins over the default above.</summary>
    public Dictionary<string, Dictionary<string, int>> WarmPools { get; set; } = new();

    /// <summary>Extra time beyond the run's timeout before the service kills the container itself.</summary>
    public int BackstopGraceMs { get; set; } = 2000;

    /// <summary>
    /// How long past a killed sandbox's end the engine's event log is read for an OOM kill its state missed (the engine can
    /// log it after the exit); only killed sandboxes whose state gives no reason wait, and only until the event arrives.
    /// </summary>
    public int OomEventGraceMs { get; set; } = 1000;

    // What a run may bring back from /tmp/work/out: files, bytes per file, bytes in all.
    public int MaxArtifacts { get; set; } = 64;
    public long MaxArtifactBytes { get; set; } = 64L * 1024 * 1024;
    public long MaxArtifactsTotalBytes { get; set; } = 64L * 1024 * 1024;

    /// <summary>
    /// Memory the output of all runs in flight may take together on this node; a run's output beyond it is spooled to a file
    /// under SpoolDirectory and stored from there. Bounds the service's memory whatever the output sizes (docs/configuration.md).
    /// </summary>
    public long MaxBufferedOutputBytes { get; set; } = 16L * 1024 * 1024;

    /// <summary>Where artifacts and output beyond MaxBufferedOutputBytes are spooled on their way to the evidence store (deleted once stored).</summary>
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
    public string ImageFor(string runtime) => Images.TryGetValue(runtime, out var image) ? image : $"sbx-{runtime}:current";

    public string OciRuntimeFor(string isolation) => isolation == Isolation.Strong ? StrongRuntime : Runtime;

    /// <summary>How many sandboxes to keep warm for a runtime and class; a pair nobody configured costs nothing.</summary>
    public int PoolSizeFor(string runtime, string isolation) =>
        WarmPools.TryGetValue(runtime, out var classes) && classes.TryGetValue(isolation, out var size)
            ? size
            : isolation == Isolation.Standard && runtime is "python" or "javascript" or "shell" ? PoolSizePerLanguage : 0;
}
