namespace Sandbox.Audited.Api.Auth;

public sealed class AuthOptions
{
    public const string Section = "Auth";

    /// <summary>"development" (local signing key, `sbx token`) or "oidc" (an OpenID Connect issuer). Required.</summary>
    public string? Mode { get; set; }

    public string? Issuer { get; set; }

    public string? Audience { get; set; }

    /// <summary>Development: PEM file of the local ECDSA P-256 signing key (created by `sbx up`, kept outside the repo).</summary>
    public string? DevelopmentKeyPath { get; set; }

    /// <summary>OIDC: the issuer's base URL; discovery and JWKS are read from it.</summary>
    public string? Authority { get; set; }

    /// <summary>OIDC: allow an http:// authority (loopback test providers only).</summary>
    public bool AllowHttpAuthority { get; set; }

    public int ClockSkewSeconds { get; set; } = 30;

    /// <summary>OIDC: how often discovery and JWKS are re-read even when nothing fails (key rotation).</summary>
    public int MetadataRefreshMinutes { get; set; } = 60;

    /// <summary>OIDC: the least time between two JWKS re-reads forced by a token with an unknown key id.</summary>
    public int UnknownKeyRefreshSeconds { get; set; } = 60;

    /// <summary>Development: whether POST /v1/dev/token (the playground's sign-in) is served at all.</summary>
    public bool DevelopmentSignIn { get; set; } = true;

    /// <summary>
    /// Development: Host names the sign-in answers to (besides loopback addresses). A page on another origin that
    /// rebinds its DNS name to 127.0.0.1 still sends its own name as Host, so it is refused.
    /// </summary>
    public List<string>? DevelopmentHosts { get; set; }

    public IReadOnlyList<string> DevelopmentHostNames => DevelopmentHosts is { Count: > 0 } hosts ? hosts : ["localhost"];

    /// <summary>The longest lifetime a token may have (exp - iat, and exp - now); longer ones are refused.</summary>
    public int MaxTokenLifetimeMinutes { get; set; } = 24 * 60;

    /// <summary>
    /// The tenant that operates the service: its admins are service admins (reload the policy for everyone); its
    /// auditors read the security stream of refused, unauthenticated requests.
    /// </summary>
    public string ServiceTenant { get; set; } = "service";

    /// <summary>Refused requests (401/403) are counted per (status, reason, address, route) over this window, then recorded once.</summary>
    public int RefusalWindowSeconds { get; set; } = 60;
}
