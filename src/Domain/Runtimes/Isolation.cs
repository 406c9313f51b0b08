namespace Sandbox.Audited.Domain.Runtimes;

/// <summary>Isolation classes, weakest first: a sandbox's class is never lower than what was asked or required.</summary>
public static class Isolation
{
    /// <summary>runc: namespaces, cgroups and seccomp on the host kernel.</summary>
    public const string Standard = "standard";

    /// <summary>gVisor's runsc: the code talks to a user-space kernel, not to the host's.</summary>
    public const string Strong = "strong";

    public static readonly IReadOnlyList<string> All = [Standard, Strong];

    public static string? Canonical(string? name) =>
        name is null ? null : All.FirstOrDefault(c => string.Equals(c, name.Trim(), StringComparison.OrdinalIgnoreCase));

    public static int Rank(string isolation) => isolation == Strong ? 1 : 0;

    public static string Stronger(string a, string b) => Rank(b) > Rank(a) ? b : a;
}
