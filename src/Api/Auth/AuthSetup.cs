using System.Security.Cryptography;
using Microsoft.AspNetCore.Authentication.JwtBearer;
using Microsoft.IdentityModel.Tokens;
using Sandbox.Audited.Audit.Trail;
using Sandbox.Audited.Domain.Startup;

namespace Sandbox.Audited.Api.Auth;

/// <summary>
/// JWT bearer authentication that fails closed: a missing or half-set configuration stops start-up, only
/// asymmetric algorithms are accepted, and issuer, audience, lifetime and signature are always validated.
/// </summary>
public static class AuthSetup
{
    public static readonly string[] AsymmetricAlgorithms =
    [
        SecurityAlgorithms.EcdsaSha256, SecurityAlgorithms.EcdsaSha384, SecurityAlgorithms.EcdsaSha512,
        SecurityAlgorithms.RsaSha256, SecurityAlgorithms.RsaSha384, SecurityAlgorithms.RsaSha512,
        SecurityAlgorithms.RsaSsaPssSha256, SecurityAlgorithms.RsaSsaPssSha384, SecurityAlgorithms.RsaSsaPssSha512,
    ];

    public static IServiceCollection AddSandboxAuth(this IServiceCollection services, IConfiguration configuration)
    {
        var options = configuration.GetSection(AuthOptions.Section).Get<AuthOptions>() ?? new AuthOptions();
        var problems = Validate(options);
        if (problems.Count > 0)
            throw new InvalidSettingException("Authentication is not configured; refusing to start: " + string.Join(" ", problems));

        services.AddAuthentication(JwtBearerDefaults.AuthenticationScheme).AddJwtBearer(jwt =>
        {
            jwt.MapInboundClaims = false;
            jwt.TokenValidationParameters = new TokenValidationParameters
            {
                ValidateIssuer = true,
                ValidIssuer = options.Issuer,
                ValidateAudience = true,
                ValidAudience = options.Audience,
                ValidateLifetime = true,
                RequireExpirationTime = true,
                RequireSignedTokens = true,
                ValidateIssuerSigningKey = true,
                ValidAlgorithms = AsymmetricAlgorithms,
                ClockSkew = TimeSpan.FromSeconds(options.ClockSkewSeconds),
                NameClaimType = "sub",
            };
            if (options.Mode == "development")
            {
                jwt.TokenValidationParameters.IssuerSigningKey = DevelopmentKeys.Load(options.DevelopmentKeyPath!).PublicKey;
            }
            else
            {
                // Discovery + JWKS from the authority. An unknown `kid` makes JwtBearer re-read the JWKS (at most once
                // per UnknownKeyRefreshSeconds), so a rotated signing key is picked up without a restart.
                jwt.Authority = options.Authority;
                jwt.RequireHttpsMetadata = !options.AllowHttpAuthority;
                jwt.RefreshOnIssuerKeyNotFound = true;
                jwt.AutomaticRefreshInterval = TimeSpan.FromMinutes(options.MetadataRefreshMinutes);
                jwt.RefreshInterval = TimeSpan.FromSeconds(options.UnknownKeyRefreshSeconds);
            }
            jwt.Events = AuthProblems.Events(options);
        });
        services.AddAuthorization();
        services.Configure<AuthOptions>(configuration.GetSection(AuthOptions.Section));
        services.AddSingleton<SecurityLog>();
        services.AddSingleton<RefusalCounter>();
        services.AddHostedService(sp => sp.GetRequiredService<RefusalCounter>());
        return services;
    }

    public static List<string> Validate(AuthOptions options)
    {
        var problems = new List<string>();
        if (string.IsNullOrWhiteSpace(options.Issuer)) problems.Add("Auth:Issuer is missing.");
        if (string.IsNullOrWhiteSpace(options.Audience)) problems.Add("Auth:Audience is missing.");
        if (options.MaxTokenLifetimeMinutes < 1) problems.Add("Auth:MaxTokenLifetimeMinutes must be at least 1.");
        if (string.IsNullOrWhiteSpace(options.ServiceTenant)) problems.Add("Auth:ServiceTenant must name the tenant that operates the service.");
        if (options.RefusalWindowSeconds < 1) problems.Add("Auth:RefusalWindowSeconds must be at least 1.");
        switch (options.Mode)
        {
            case "development":
                if (string.IsNullOrWhiteSpace(options.DevelopmentKeyPath) || !File.Exists(options.DevelopmentKeyPath))
                    problems.Add($"Auth:DevelopmentKeyPath '{options.DevelopmentKeyPath}' does not name an existing key file (run `./sbx up` to create one).");
                break;
            case "oidc":
                if (!Uri.TryCreate(options.Authority, UriKind.Absolute, out var authority))
                    problems.Add("Auth:Authority must be the issuer's absolute URL.");
                else if (authority.Scheme != Uri.UriSchemeHttps && !(options.AllowHttpAuthority && authority.IsLoopback))
                    problems.Add("Auth:Authority must use https (http is allowed only for a loopback provider with Auth:AllowHttpAuthority).");
                break;
            default:
                problems.Add($"Auth:Mode must be 'development' or 'oidc' (got '{options.Mode}').");
                break;
        }
        return problems;
    }
}

/// <summary>The local development signing key: ECDSA P-256 (ES256), asymmetric like production.</summary>
public sealed record DevelopmentKeys(ECDsaSecurityKey PrivateKey, ECDsaSecurityKey PublicKey)
{
    public static DevelopmentKeys Load(string path)
    {
        var ecdsa = ECDsa.Create();
        ecdsa.ImportFromPem(File.ReadAllText(path));
        var keyId = Base64UrlEncoder.Encode(SHA256.HashData(ecdsa.ExportSubjectPublicKeyInfo()))[..16];
        var publicOnly = ECDsa.Create(ecdsa.ExportParameters(includePrivateParameters: false));
        return new DevelopmentKeys(new ECDsaSecurityKey(ecdsa) { KeyId = keyId }, new ECDsaSecurityKey(publicOnly) { KeyId = keyId });
    }

    public static void Create(string path)
    {
        using var ecdsa = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        File.WriteAllText(path, ecdsa.ExportPkcs8PrivateKeyPem());
        if (!OperatingSystem.IsWindows())
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
    }
}
