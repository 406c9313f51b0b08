using Sandbox.Audited.Domain.Policies;

namespace Sandbox.Audited.Api.Policies;

public sealed class PolicyOptions
{
    public const string Section = "Policies";

    public string Directory { get; set; } = "policies";

    /// <summary>Reload when a policy file changes (the change must settle for ReloadDebounceMs first).</summary>
    public bool Watch { get; set; } = true;

    public int ReloadDebounceMs { get; set; } = 500;
}

/// <summary>The bundle runs are decided with, since when, and what made it active.</summary>
public sealed record ActivePolicy(PolicyBundle Bundle, DateTimeOffset ActivatedAt, string Trigger);

/// <summary>Holds the active policy bundle; swapping it is one atomic reference write.</summary>
public sealed class PolicyHost(PolicyBundle initial)
{
    private volatile ActivePolicy _current = new(initial, DateTimeOffset.UtcNow, PolicyActivations.Startup);

    public PolicyBundle Active => _current.Bundle;

    public ActivePolicy Current => _current;

    public void Activate(ActivePolicy next) => _current = next;
}
