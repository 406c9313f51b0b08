using Sandbox.Audited.Domain.Policies;

namespace Sandbox.Audited.Api.Policies;

public sealed class PolicyOptions
{
    public const string Section = "Policies";

    public string Directory { get; set; } = "policies";
}

/// <summary>Holds the active policy bundle; swapping it is one atomic reference write.</summary>
public sealed class PolicyHost
{
    private volatile PolicyBundle _active;

    public PolicyHost(PolicyBundle initial) => _active = initial;

    public PolicyBundle Active => _active;

    public void Activate(PolicyBundle bundle) => _active = bundle;
}
