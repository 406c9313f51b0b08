using Microsoft.AspNetCore.Authentication;
using System.Security.Claims;
using Microsoft.AspNetCore.Authentication.JwtBearer;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Protocols;
using Microsoft.IdentityModel.Protocols.OpenIdConnect;
using Microsoft.IdentityModel.Tokens;

namespace Sandbox.Audited.Api.Auth;

/// <summary>
/// Token checks beyond the signature (every token names a `sub` and a `tenant`) and 401/403 answers as
/// problem details, so that an authentication failure reads like every other error.
/// </summary>
public static class AuthProblems
{
    private const string MissingClaims = "The token must carry non-empty 'sub' and 'tenant' claims.";

    public static JwtBearerEvents Events(AuthOptions options)
    {
        var forcedReads = new ForcedReads(TimeSpan.FromSeconds(options.UnknownKeyRefreshSeconds));
        var maxLifetime = TimeSpan.FromMinutes(options.MaxTokenLifetimeMinutes);
        return new JwtBearerEvents
        {
            OnTokenValidated = context =>
            {
                if (!HasSubjectAndTenant(context.Principal))
                    context.Fail(MissingClaims);
                else if (TokenProblem(context.SecurityToken, maxLifetime, TimeSpan.FromSeconds(options.ClockSkewSeconds)) is { } problem)
                    context.Fail(problem);
                return Task.CompletedTask;
            },
            OnAuthenticationFailed = context => RetryWithRotatedKeysAsync(context, forcedReads),
            OnChallenge = async context =>
            {
                context.HandleResponse();
                context.HttpContext.RequestServices.GetRequiredService<RefusalCounter>().Count(context.HttpContext, 401, ReasonCode(context.AuthenticateFailure));
                var detail = context.AuthenticateFailure is { } failure
                    ? "The bearer token was rejected: " + Describe(failure)
                    : "Send a bearer token (Authorization: Bearer <token>).";
                context.Response.Headers.WWWAuthenticate = context.AuthenticateFailure is null ? "Bearer" : "Bearer error=\"invalid_token\"";
                await WriteAsync(context.HttpContext, 401, Problems.Unauthorized, "Authentication required", detail);
            },
            OnForbidden = context =>
            {
                context.HttpContext.RequestServices.GetRequiredService<RefusalCounter>().Count(context.HttpContext, 403, "forbidden");
                return WriteAsync(context.HttpContext, 403, Problems.Forbidden, "Forbidden", "The token does not grant access to this resource.");
            },
        };
    }

    /// <summary>
    /// A token naming a key id we have not seen: the provider may have rotated its signing key. JwtBearer has just
    /// asked its configuration manager for a re-read, which IdentityModel 8 does in the background, so this token
    /// would be refused. Read discovery + JWKS now (at most once per Auth:UnknownKeyRefreshSeconds, so random key
    /// ids cannot make us hammer the provider) and validate once more; every other check applies unchanged.
    /// </summary>
    private static async Task RetryWithRotatedKeysAsync(AuthenticationFailedContext context, ForcedReads reads)
    {
        var options = context.Options;
        if (context.Exception is not SecurityTokenSignatureKeyNotFoundException || string.IsNullOrEmpty(options.MetadataAddress) || !reads.TryTake())
            return;
        var header = context.Request.Headers.Authorization.ToString();
        if (!header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
            return;
        var configuration = await OpenIdConnectConfigurationRetriever.GetAsync(options.MetadataAddress,
            new HttpDocumentRetriever(options.Backchannel) { RequireHttps = options.RequireHttpsMetadata }, context.HttpContext.RequestAborted);
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

    private sealed class ForcedReads(TimeSpan interval)
    {
        private long _last = long.MinValue / 2;

        public bool TryTake()
        {
            var now = Environment.TickCount64;
            var last = Interlocked.Read(ref _last);
            return now - last >= (long)interval.TotalMilliseconds && Interlocked.CompareExchange(ref _last, now, last) == last;
        }
    }

    /// <summary>
    /// Checks the signature validation does not make: a `crit` header names extensions the signer requires the reader
    /// to understand (RFC 7515 §4.1.11) and we understand none; a token may not live longer than Auth:MaxTokenLifetimeMinutes.
    /// </summary>
    public static string? TokenProblem(SecurityToken? token, TimeSpan maxLifetime, TimeSpan skew)
    {
        if (token is not JsonWebToken jwt)
            return "The token is not a JWT.";
        if (jwt.TryGetHeaderValue<object>("crit", out _))
            return "The token has a 'crit' header naming extensions this service does not understand (RFC 7515 §4.1.11).";
        var expires = jwt.ValidTo;
        if (jwt.TryGetPayloadValue<object>("iat", out _) && expires - jwt.IssuedAt > maxLifetime)
            return $"The token lives longer than this service allows ({maxLifetime.TotalMinutes:0} minutes from issue to expiry).";
        if (expires - DateTime.UtcNow > maxLifetime + skew)
            return $"The token expires more than {maxLifetime.TotalMinutes:0} minutes from now, longer than this service allows.";
        return null;
    }

    /// <summary>A short, fixed reason per refusal (the counter's key; never token contents).</summary>
    public static string ReasonCode(Exception? failure) => failure switch
    {
        null => "missing_token",
        SecurityTokenExpiredException => "expired",
        SecurityTokenInvalidAudienceException => "audience",
        SecurityTokenInvalidIssuerException => "issuer",
        SecurityTokenSignatureKeyNotFoundException => "unknown_key",
        SecurityTokenInvalidAlgorithmException => "algorithm",
        SecurityTokenInvalidSignatureException => "signature",
        SecurityTokenNoExpirationException => "no_expiry",
        SecurityTokenMalformedException => "malformed",
        AuthenticationFailureException => "claims_or_lifetime",
        _ => "invalid",
    };

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
