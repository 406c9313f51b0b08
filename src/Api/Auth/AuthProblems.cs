using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.JwtBearer;

namespace Sandbox.Audited.Api.Auth;

/// <summary>
/// Token checks beyond the signature (every token names a `sub` and a `tenant`) and 401/403 answers as
/// problem details, so that an authentication failure reads like every other error.
/// </summary>
public static class AuthProblems
{
    public static JwtBearerEvents Events() => new()
    {
        OnTokenValidated = context =>
        {
            var user = context.Principal;
            if (string.IsNullOrEmpty(user?.FindFirst("sub")?.Value) || string.IsNullOrEmpty(user.FindFirst("tenant")?.Value))
                context.Fail("The token must carry non-empty 'sub' and 'tenant' claims.");
            return Task.CompletedTask;
        },
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

    // The exception type names the check that failed; the message may echo token contents, so it is not sent.
    private static string Describe(Exception failure) => failure switch
    {
        Microsoft.IdentityModel.Tokens.SecurityTokenExpiredException => "it has expired.",
        Microsoft.IdentityModel.Tokens.SecurityTokenInvalidAudienceException => "it is not meant for this service (audience).",
        Microsoft.IdentityModel.Tokens.SecurityTokenInvalidIssuerException => "it comes from an issuer this service does not trust.",
        Microsoft.IdentityModel.Tokens.SecurityTokenSignatureKeyNotFoundException => "it is signed with a key the issuer does not publish.",
        Microsoft.IdentityModel.Tokens.SecurityTokenInvalidAlgorithmException => "its algorithm is not allowed (asymmetric algorithms only).",
        Microsoft.IdentityModel.Tokens.SecurityTokenInvalidSignatureException => "its signature does not verify.",
        Microsoft.IdentityModel.Tokens.SecurityTokenNoExpirationException => "it has no expiry.",
        Microsoft.IdentityModel.Tokens.SecurityTokenMalformedException => "it is not a well-formed JWT.",
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
