using Microsoft.AspNetCore.Authentication;
using System.Security.Claims;
using Microsoft.AspNetCore.Authentication.JwtBearer;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace Sandbox.Audited.Api.Auth;

/// <summary>
/// Token checks beyond the signature (every token names a `sub` and a `tenant`) and 401/403 answers as
/// problem details, so that an authentication failure reads like every other error.
/// </summary>
public static class AuthProblems
{
    private const string MissingClaims = "The token must carry non-empty 'sub' and 'tenant' claims.";

    public static JwtBearerEvents Events() => new()
    {
        OnTokenValidated = context =>
        {
            if (!HasSubjectAndTenant(context.Principal))
                context.Fail(MissingClaims);
            return Task.CompletedTask;
        },
        OnAuthenticationFailed = RetryWithRotatedKeysAsync,
        OnChallenge = async context =>
        {
            context.HandleResponse();
            var detail = context.AuthenticateFailure is { } failure
                ? "The bearer token was rejected: " + Describe(failure)
                : "Send a bearer token (Authorization: Bearer <token>).";
            context.Response.Headers.WWWAuthenticate = context.AuthenticateFailure is null ? "Bearer" : "Bearer error=\"invalid_token\"";
            await WriteAsync(context.HttpContext, 401, Problems.Unauthorized, "Authentication required", detail);
        },
        OnForbidden = context =>
            WriteAsync(context.HttpContext, 403, Problems.Forbidden, "Forbidden", "The token does not grant access to this resource."),
    };

    /// <summary>
    /// A token naming a key id we have not seen: the provider may have rotated its signing key. JwtBearer has just
    /// asked for a JWKS re-read (at most once per Auth:UnknownKeyRefreshSeconds); validate once more against the
    /// re-read keys so that the first token after a rotation is not refused. Every other check applies unchanged.
    /// </summary>
    private static async Task RetryWithRotatedKeysAsync(AuthenticationFailedContext context)
    {
        if (context.Exception is not SecurityTokenSignatureKeyNotFoundException || context.Options.ConfigurationManager is null)
            return;
        var header = context.Request.Headers.Authorization.ToString();
        if (!header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
            return;
        var configuration = await context.Options.ConfigurationManager.GetConfigurationAsync(context.HttpContext.RequestAborted);
        var parameters = context.Options.TokenValidationParameters.Clone();
        parameters.IssuerSigningKeys = configuration.SigningKeys;
        var result = await new JsonWebTokenHandler { MapInboundClaims = false }.ValidateTokenAsync(header["Bearer ".Length..].Trim(), parameters);
        if (!result.IsValid)
            return;
        var principal = new ClaimsPrincipal(result.ClaimsIdentity);
        if (!HasSubjectAndTenant(principal))
            return;
        context.Principal = principal;
        context.Success();
    }

    private static bool HasSubjectAndTenant(ClaimsPrincipal? user) =>
        !string.IsNullOrEmpty(user?.FindFirst("sub")?.Value) && !string.IsNullOrEmpty(user.FindFirst("tenant")?.Value);

    // The exception type names the check that failed; the message may echo token contents, so it is not sent.
    private static string Describe(Exception failure) => failure switch
    {
        SecurityTokenExpiredException => "it has expired.",
        SecurityTokenInvalidAudienceException => "it is not meant for this service (audience).",
        SecurityTokenInvalidIssuerException => "it comes from an issuer this service does not trust.",
        SecurityTokenSignatureKeyNotFoundException => "it is signed with a key the issuer does not publish.",
        SecurityTokenInvalidAlgorithmException => "its algorithm is not allowed (asymmetric algorithms only).",
        SecurityTokenInvalidSignatureException => "its signature does not verify.",
        SecurityTokenNoExpirationException => "it has no expiry.",
        SecurityTokenMalformedException => "it is not a well-formed JWT.",
        AuthenticationFailureException => failure.Message,
        _ => "it is not valid.",
    };

    private static async Task WriteAsync(HttpContext http, int status, string type, string title, string detail)
    {
        http.Response.StatusCode = status;
        await http.RequestServices.GetRequiredService<IProblemDetailsService>().WriteAsync(new ProblemDetailsContext
        {
            HttpContext = http,
            ProblemDetails = Problems.Create(status, type, title, detail),
        });
    }
}
