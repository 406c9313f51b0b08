namespace Sandbox.Audited.Domain.Runs;

/// <summary>The roles a token may carry (the `roles` claim or scopes); each tenant's runs are seen through them.</summary>
public static class Roles
{
    public const string Runner = "runner";
    public const string Auditor = "auditor";
    public const string Admin = "admin";
}

/// <summary>Whose a run is: the tenant and subject of the token that requested it.</summary>
public sealed record RunOwner(string? Tenant, string? Subject)
{
    public static RunOwner Of(RunSummary run) => new(run.Tenant, run.Subject);
}

/// <summary>
/// The one rule per role, for every endpoint: runners run and see their own runs; auditors and admins read their own
/// tenant's runs and audit trail but never run; nobody sees across tenants; a caller without tenant or subject may do nothing.
/// </summary>
public static class Access
{
    /// <summary>POST /v1/runs and reproductions: the runner role.</summary>
    public static bool MayRun(Caller caller) => Identified(caller) && caller.Has(Roles.Runner);

    /// <summary>The audit trail, policies and any run of the caller's own tenant.</summary>
    public static bool MayAudit(Caller caller) => Identified(caller) && (caller.Has(Roles.Auditor) || caller.Has(Roles.Admin));

    /// <summary>An audit query may name a tenant: only the caller's own.</summary>
    public static bool MayAudit(Caller caller, string tenant) => MayAudit(caller) && caller.Tenant == tenant;

    /// <summary>The caller requested this run. Reads by anyone else are access-logged.</summary>
    public static bool IsOwner(Caller caller, RunOwner run) =>
        Identified(caller) && caller.Tenant == run.Tenant && caller.Subject == run.Subject;

    /// <summary>A run, its events, output, artifacts, evidence bundle and policy replay: its owner, or an auditor of its tenant.</summary>
    public static bool MayRead(Caller caller, RunOwner run) => IsOwner(caller, run) || (MayAudit(caller) && caller.Tenant == run.Tenant);

    /// <summary>The live stream: its owner only (auditors read the recorded history instead).</summary>
    public static bool MayWatch(Caller caller, RunOwner run) => IsOwner(caller, run);

    /// <summary>Reproducing starts a new run like the original: its owner, or an admin of its tenant; never an auditor.</summary>
    public static bool MayReproduce(Caller caller, RunOwner run) =>
        IsOwner(caller, run) || (Identified(caller) && caller.Has(Roles.Admin) && caller.Tenant == run.Tenant);

    /// <summary>An admin of the tenant that operates the service (Auth:ServiceTenant); other admins administer their own tenant only.</summary>
    public static bool IsServiceAdmin(Caller caller, string serviceTenant) =>
        Identified(caller) && caller.Has(Roles.Admin) && string.Equals(caller.Tenant, serviceTenant, StringComparison.Ordinal);

    private static bool Identified(Caller caller) => !string.IsNullOrEmpty(caller.Tenant) && !string.IsNullOrEmpty(caller.Subject);
}
