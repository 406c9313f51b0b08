using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Executor.Sandboxes;

/// <summary>
/// The container-level limits of a sandbox. Timeout and output caps are per run (sent to the
/// supervisor), so a pooled sandbox fits any run whose profile equals the pool's.
/// </summary>
// ImageId pins the exact image (a reproduction runs on the image its original recorded); null means the language's current image.
public sealed record SandboxProfile(string Language, int MemoryMb, double Cpus, int Pids, int TmpfsMb, string? ImageId = null)
{
    public static SandboxProfile For(string language, RunLimits limits) =>
        new(language, limits.MemoryMb, limits.Cpus, limits.Pids, limits.TmpfsMb);
}
