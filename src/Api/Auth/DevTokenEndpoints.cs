using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Http.HttpResults;
using Sandbox.Audited.Api.Hosting;
using Sandbox.Audited.Audit.Trail;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Api.Auth;

/// <summary>
/// The playground's development sign-in: POST /v1/dev/token mints a short-lived token signed with the local
/// development key. It is mapped only when Auth:Mode is "development" and Auth:DevelopmentSignIn is on; in oidc mode
/// no route exists at all. It answers only requests whose Host is a loopback address or a name in
/// Auth:DevelopmentHosts (a DNS-rebinding page sends its own name), and every token it mints is recorded
/// (token_minted in the tenant's security stream) before it is handed out.
/// </summary>
public static partial class DevTokenEndpoints
{
    public static readonly TimeSpan Lifetime = TimeSpan.FromHours(1);

    public static readonly IReadOnlyList<string> MintableRoles = [Roles.Runner, Roles.Auditor];

    public static IEndpointRouteBuilder MapDevTokens(this IEndpointRouteBuilder app, IConfiguration configuration)
    {
        var options = configuration.GetSection(AuthOptions.Section).Get<AuthOptions>();
        if (options?.Mode != "development" || !options.DevelopmentSignIn)
            return app;

        var group = app.MapGroup("/v1/dev").AllowAnonymous().WithTags("Development");
        group.AddEndpointFilter(async (context, next) =>
            IsDevelopmentHost(context.HttpContext.Request.Host, options.DevelopmentHostNames)
                ? await next(context)
                : TypedResults.Problem(Problems.Create(403, Problems.Forbidden, "Development sign-in is local only",
                    $"The development sign-in answers only requests addressed to a loopback host or one of Auth:DevelopmentHosts, not '{context.HttpContext.Request.Host.Host}'. Use OIDC (Auth:Mode=oidc) to serve other hosts.")));
        group.MapGet("/", () => TypedResults.Ok(new DevInfo(options.Mode, MintableRoles, (int)Lifetime.TotalSeconds)));
        group.MapPost("/token", (DevTokenRequest body, HttpContext http, SecurityLog security, ILoggerFactory loggers) =>
            MintAsync(options, body, http, security, loggers.CreateLogger(typeof(DevTokenEndpoints).FullName!)));
        return app;
    }

    /// <summary>Loopback addresses always; names only when listed (no suffix or wildcard matching).</summary>
    public static bool IsDevelopmentHost(HostString host, IReadOnlyList<string> allowed)
    {
        if (!host.HasValue) return false;
        var name = host.Host.Trim('[', ']');
        if (System.Net.IPAddress.TryParse(name, out var ip))
            return System.Net.IPAddress.IsLoopback(ip);
        return allowed.Contains(name, StringComparer.OrdinalIgnoreCase);
    }

    public static async Task<Results<Ok<DevToken>, ProblemHttpResult>> MintAsync(AuthOptions options, DevTokenRequest body, HttpContext http, SecurityLog security, ILogger logger)
    {
        var errors = new List<string>();
        if (body.Subject is null || !Name().IsMatch(body.Subject))
            errors.Add("'subject' must be 1-64 letters, digits, '.', '_', '@' or '-'.");
        if (body.Tenant is null || !Name().IsMatch(body.Tenant))
            errors.Add("'tenant' must be 1-64 letters, digits, '.', '_', '@' or '-'.");
        var roles = (body.Roles ?? []).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();
        if (roles.Count == 0 || roles.Any(r => !MintableRoles.Contains(r)))
            errors.Add($"'roles' must name one or more of: {string.Join(", ", MintableRoles)}.");
        if (errors.Count > 0)
            return TypedResults.Problem(Problems.Create(400, Problems.InvalidRequest, "Invalid development token request", string.Join(" ", errors), errors: errors));

        var expiresAt = DateTimeOffset.UtcNow + Lifetime;
        try
        {
            await security.RecordMintAsync(new Caller(body.Subject!, body.Tenant!, roles), expiresAt, "anonymous (development sign-in)",
                RequestClient.Of(http), http.Request.Host.Value, http.RequestAborted);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            logger.LogError(e, "A development token could not be recorded, so it was not minted");
            http.Response.Headers.RetryAfter = "5";
            return TypedResults.Problem(Problems.Create(503, Problems.AuditUnavailable, "The audit store is unavailable",
                "The token could not be recorded, so none was minted. Retry shortly."));
        }
        var token = DevelopmentTokens.Mint(options, body.Subject!, body.Tenant!, roles, Lifetime);
        LogMinted(logger, body.Subject!, body.Tenant!, string.Join(",", roles));
        return TypedResults.Ok(new DevToken(token, expiresAt, body.Subject!, body.Tenant!, roles));
    }

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
    private static partial Regex Name();

    [LoggerMessage(Level = LogLevel.Information, Message = "Development token minted for {Subject} in tenant {Tenant} with roles {Roles}")]
    private static partial void LogMinted(ILogger logger, string subject, string tenant, string roles);
}

public sealed record DevInfo(string Mode, IReadOnlyList<string> Roles, int LifetimeSeconds);

public sealed record DevTokenRequest(string? Subject, string? Tenant, IReadOnlyList<string>? Roles);

public sealed record DevToken(string Token, DateTimeOffset ExpiresAt, string Subject, string Tenant, IReadOnlyList<string> Roles);
