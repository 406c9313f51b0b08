using System.Security.Claims;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Api.Auth;

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
}
