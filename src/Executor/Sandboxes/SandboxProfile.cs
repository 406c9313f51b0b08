using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Executor.Sandboxes;

/// <summary>
/// What a sandbox is made of: runtime image, isolation class and container-level limits. Timeout and output caps are
/// per run (sent to the supervisor), so a pooled sandbox fits any run whose profile equals the pool's. ImageId pins the
/// exact image (a reproduction runs on the image its original recorded); null means the runtime's current image.
/// </summary>
public sealed record SandboxProfile(string Language, int MemoryMb, double Cpus, int Pids, int TmpfsMb, string Runtime, string Isolation, string? ImageId = null)
{
    public static SandboxProfile For(string runtime, string language, string isolation, RunLimits limits) =>
        new(language, limits.MemoryMb, limits.Cpus, limits.Pids, limits.TmpfsMb, runtime, isolation);
}
