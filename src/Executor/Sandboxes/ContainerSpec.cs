using Docker.DotNet.Models;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Executor.Sandboxes;

/// <summary>
/// THE place where a sandbox container is configured. Every container gets the full contract of
/// DESIGN.md: no network, read-only root, capped tmpfs for /tmp and /dev/shm, uid 65534, no capabilities,
/// no-new-privileges, default seccomp, pids/memory(=memory+swap)/CPU limits, ulimits (POSIX message queues
/// closed), no host env or mounts, labels. No init: the supervisor is PID 1, the only holder of the
/// container's stdout, not dumpable and immune to signals from inside, so user code cannot forge its frames.
/// </summary>
public static class ContainerSpec
{
    public const string ServiceLabel = "sandbox.audited.service";
    public const string ServiceName = "sandbox-audited";
    public const string NodeLabel = "sandbox.audited.node";
    public const string RunLabel = "sandbox.audited.run";
    public const string LanguageLabel = "sandbox.audited.language";
    public const string PooledRunId = "pool";

    public const string User = "65534:65534";
    public const long OpenFiles = 256;
    public const long FileSizeBytes = 64L * 1024 * 1024;

    /// <summary>/dev/shm is small and fixed: enough for POSIX semaphores (multiprocessing locks), not a second /tmp.</summary>
    public const int ShmMb = 1;
    /// <summary>
    /// Under gVisor the container's pids cgroup also counts the sandbox kernel's own threads and its ptrace stub
    /// processes (one per address space); without room for them a second process already fails (EAGAIN in the sentry).
    /// </summary>
    public const int StrongPidsFactor = 4;

    public static CreateContainerParameters Build(SandboxProfile profile, string image, string runtime, string node, string runLabel)
    {
        var memory = profile.MemoryMb * 1024L * 1024L;
        var labels = Labels(profile.Language, node, runLabel);
        return new CreateContainerParameters
        {
            Image = image,
            Cmd = ["sbx-supervisor", profile.Language],
            User = User,
            WorkingDir = "/tmp",
            Hostname = "sandbox",
            Env = [],
            Labels = labels,
            NetworkDisabled = true,
            AttachStdin = true,
            AttachStdout = true,
            AttachStderr = true,
            OpenStdin = true,
            StdinOnce = true,
            Tty = false,
            HostConfig = new HostConfig
            {
                Runtime = runtime,
                NetworkMode = "none",
                ReadonlyRootfs = true,
                Tmpfs = new Dictionary<string, string>
                {
                    ["/tmp"] = TmpfsOptions(profile.TmpfsMb),
                    ["/dev/shm"] = TmpfsOptions(ShmMb),
                },
                CapDrop = ["ALL"],
                CapAdd = [],
                SecurityOpt = ["no-new-privileges"],
                Privileged = false,
                PidsLimit = profile.Isolation == Domain.Runtimes.Isolation.Strong ? profile.Pids * StrongPidsFactor : profile.Pids,
                Memory = memory,
                MemorySwap = memory,
                NanoCPUs = (long)(profile.Cpus * 1_000_000_000),
                Ulimits =
                [
                    new Ulimit { Name = "nofile", Soft = OpenFiles, Hard = OpenFiles },
                    new Ulimit { Name = "fsize", Soft = FileSizeBytes, Hard = FileSizeBytes },
                    new Ulimit { Name = "core", Soft = 0, Hard = 0 },
                    // POSIX message queues are charged per uid across containers: none at all.
                    new Ulimit { Name = "msgqueue", Soft = 0, Hard = 0 },
                ],
                Init = false,
                IpcMode = "private",
                Binds = [],
                Mounts = [],
                Devices = [],
                AutoRemove = false,
                RestartPolicy = new RestartPolicy { Name = RestartPolicyKind.No },
                LogConfig = new LogConfig { Type = "none", Config = new Dictionary<string, string>() },
            },
        };
    }

    /// <summary>The applied settings, as recorded in SandboxCreated.</summary>
    public static SandboxSettings Describe(CreateContainerParameters p) => new(
        Runtime: p.HostConfig.Runtime,
        NetworkMode: p.HostConfig.NetworkMode,
        ReadOnlyRootfs: p.HostConfig.ReadonlyRootfs,
        User: p.User,
        CapDrop: [.. p.HostConfig.CapDrop],
        SecurityOpt: [.. p.HostConfig.SecurityOpt, "seccomp=docker-default"],
        Tmpfs: string.Join(' ', p.HostConfig.Tmpfs.OrderByDescending(t => t.Key, StringComparer.Ordinal).Select(t => t.Key + ":" + t.Value)),
        MemoryBytes: p.HostConfig.Memory,
        MemorySwapBytes: p.HostConfig.MemorySwap,
        NanoCpus: p.HostConfig.NanoCPUs,
        PidsLimit: p.HostConfig.PidsLimit ?? 0,
        Ulimits: p.HostConfig.Ulimits.Select(u => $"{u.Name}={u.Soft}:{u.Hard}").ToList(),
        Init: p.HostConfig.Init ?? false,
        Labels: new SortedDictionary<string, string>(p.Labels));

    public static string TmpfsOptions(int sizeMb) => $"rw,nosuid,nodev,noexec,size={sizeMb}m,mode=1777";

    private static Dictionary<string, string> Labels(string language, string node, string run) => new()
    {
        [ServiceLabel] = ServiceName,
        [NodeLabel] = node,
        [RunLabel] = run,
        [LanguageLabel] = language,
    };
}
