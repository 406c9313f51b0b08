using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Sandbox.Audited.Api.Auth;

/// <summary>
/// The playground's development sign-in: POST /v1/dev/token mints a short-lived token signed with the local
/// development key. It is mapped only when Auth:Mode is "development"; in oidc mode no route exists at all.
/// </summary>
public static partial class DevTokenEndpoints
{
    public static readonly TimeSpan Lifetime = TimeSpan.FromHours(1);

    public static readonly IReadOnlyList<string> MintableRoles = [Roles.Runner, Roles.Auditor];

    public static IEndpointRouteBuilder MapDevTokens(this IEndpointRouteBuilder app, IConfiguration configuration)
    {
        var options = configuration.GetSection(AuthOptions.Section).Get<AuthOptions>();
        if (options?.Mode != "development")
            return app;

        var group = app.MapGroup("/v1/dev").AllowAnonymous().WithTags("Development");
        group.MapGet("/", () => TypedResults.Ok(new DevInfo(options.Mode, MintableRoles, (int)Lifetime.TotalSeconds)));
        group.MapPost("/token", (DevTokenRequest body, ILoggerFactory loggers) => Mint(options, body, loggers.CreateLogger(typeof(DevTokenEndpoints).FullName!)));
        return app;
    }

    public static Results<Ok<DevToken>, ProblemHttpResult> Mint(AuthOptions options, DevTokenRequest body, ILogger logger)
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
