using System.Globalization;

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

/// <summary>
/// The least value of each limit that a sandbox can be run with, and the exact form of CPUs. Below these the
/// engine refuses (Docker: CPUs &lt; 0.01) or silently means something else (NanoCpus 0 is "unlimited"), or the
/// runtime cannot start (its own threads need pids, its heap needs memory). Requests and policies use the same
/// floors, so the value recorded is always the value enforced.
/// </summary>
public static class LimitFloors
{
    public const int TimeoutMs = 1;
    public const int MemoryMb = 16;
    public const double Cpus = 0.01;
    public const int Pids = 16;
    public const int OutputBytes = 1;
    public const int TmpfsMb = 1;

    /// <summary>CPUs are enforced in hundredths of a CPU; a value is exact when it has at most two decimals.</summary>
    public const int CpuScale = 100;

    public static bool IsHundredths(double cpus) =>
        double.IsFinite(cpus) && Math.Abs(cpus * CpuScale - Math.Round(cpus * CpuScale)) < 1e-6;

    /// <summary>The nearest hundredth: removes binary noise (0.29 stays 0.29) from a value that passed IsHundredths.</summary>
    public static double Hundredths(double cpus) => Math.Round(cpus * CpuScale) / CpuScale;

    /// <summary>Why this value is out of range or not exact, or null when it may be used. Max is the policy's ceiling.</summary>
    public static string? Check(string name, int? value, int min, int max) =>
        value is { } v && (v < min || v > max)
            ? $"'limits.{name}' is {v}; it must be an integer from {min} to {max}."
            : null;

    public static string? CheckCpus(double? value, double max)
    {
        if (value is not { } v) return null;
        var range = $"from {Cpus.ToString(CultureInfo.InvariantCulture)} to {max.ToString(CultureInfo.InvariantCulture)}";
        if (!double.IsFinite(v) || v < Cpus || v > max)
            return $"'limits.cpus' is {v.ToString(CultureInfo.InvariantCulture)}; it must be a number of CPUs {range}.";
        if (!IsHundredths(v))
            return $"'limits.cpus' is {v.ToString(CultureInfo.InvariantCulture)}; CPUs are enforced in hundredths, so give at most two decimals ({range}).";
        return null;
    }

    /// <summary>Every range problem of a request's limits, with the ceiling of each limit as its maximum.</summary>
    public static IEnumerable<string> Problems(RequestedLimits limits, RunLimits? ceilings)
    {
        var c = ceilings ?? new RunLimits(int.MaxValue, int.MaxValue, 1024, int.MaxValue, int.MaxValue, int.MaxValue);
        string?[] problems =
        [
            Check("timeoutMs", limits.TimeoutMs, TimeoutMs, c.TimeoutMs),
            Check("memoryMb", limits.MemoryMb, MemoryMb, c.MemoryMb),
            CheckCpus(limits.Cpus, c.Cpus),
            Check("pids", limits.Pids, Pids, c.Pids),
            Check("outputBytes", limits.OutputBytes, OutputBytes, c.OutputBytes),
            Check("tmpfsMb", limits.TmpfsMb, TmpfsMb, c.TmpfsMb),
        ];
        return problems.OfType<string>();
    }
}
