using System.Globalization;

namespace Sandbox.Audited.Bench;

/// <summary>Latency figures in milliseconds over one series of samples.</summary>
public sealed record Latency(string Name, int Samples, double P50, double P95, double P99, double Mean, double Min, double Max)
{
    public static Latency Of(string name, IReadOnlyCollection<double> samples)
    {
        if (samples.Count == 0)
            return new Latency(name, 0, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN);
        var sorted = samples.Order().ToArray();
        return new Latency(name, sorted.Length, Percentile(sorted, 0.50), Percentile(sorted, 0.95), Percentile(sorted, 0.99),
            sorted.Average(), sorted[0], sorted[^1]);
    }

    private static double Percentile(double[] sorted, double p)
    {
        var rank = p * (sorted.Length - 1);
        var low = (int)Math.Floor(rank);
        var high = (int)Math.Ceiling(rank);
        return sorted[low] + (sorted[high] - sorted[low]) * (rank - low);
    }

    public string Row() => string.Create(CultureInfo.InvariantCulture,
        $"| {Name} | {Samples} | {P50:F1} | {P95:F1} | {P99:F1} | {Mean:F1} |");
}
