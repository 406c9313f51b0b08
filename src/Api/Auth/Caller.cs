using System.Security.Claims;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Api.Auth;

public static class Roles
{
    public const string Runner = "runner";
    public const string Auditor = "auditor";
    public const string Admin = "admin";
}

public static class CallerClaims
{
    /// <summary>Who is calling: sub, tenant, and roles from the `roles` claim or from scopes (`scope`/`scp`).</summary>
    public static Caller ToCaller(this ClaimsPrincipal user)
    {
        var subject = user.FindFirstValue("sub") ?? user.FindFirstValue(ClaimTypes.NameIdentifier) ?? "";
        var tenant = user.FindFirstValue("tenant") ?? "";
        var roles = user.FindAll("roles").Concat(user.FindAll("role")).Concat(user.FindAll(ClaimTypes.Role))
            .Select(c => c.Value)
            .Concat(user.FindAll("scope").Concat(user.FindAll("scp")).SelectMany(c => c.Value.Split(' ', StringSplitOptions.RemoveEmptyEntries)))
            .Where(r => r is Roles.Runner or Roles.Auditor or Roles.Admin || r.StartsWith("sandbox:", StringComparison.Ordinal) || r == "reviewer")
            .Select(r => r.StartsWith("sandbox:", StringComparison.Ordinal) ? r["sandbox:".Length..] : r)
            .Distinct(StringComparer.Ordinal)
            .Order(StringComparer.Ordinal)
            .ToList();
        return new Caller(subject, tenant, roles);
    }

    public static bool Has(this Caller caller, string role) => caller.Roles.Contains(role);

    /// <summary>A service admin is an admin of the tenant that operates the service (Auth:ServiceTenant); other admins administer their own tenant only.</summary>
    public static bool IsServiceAdmin(this Caller caller, string serviceTenant) =>
        caller.Has(Roles.Admin) && caller.Tenant.Length > 0 && string.Equals(caller.Tenant, serviceTenant, StringComparison.Ordinal);
}
