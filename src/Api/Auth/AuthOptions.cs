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
}
