namespace Sandbox.Audited.Domain.Runs;

/// <summary>Limits a request asks for; null means "the policy's default".</summary>
public sealed record RequestedLimits(
    int? TimeoutMs = null,
    int? MemoryMb = null,
    double? Cpus = null,
    int? Pids = null,
    int? OutputBytes = null,
    int? TmpfsMb = null)
{
    public static readonly RequestedLimits None = new();
}

/// <summary>The limits a run is executed with, after policy.</summary>
public sealed record RunLimits(int TimeoutMs, int MemoryMb, double Cpus, int Pids, int OutputBytes, int TmpfsMb);
