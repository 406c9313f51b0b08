using System.Security.Claims;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace Sandbox.Audited.Api.Auth;

/// <summary>Mints development tokens signed with the local key (`sbx token`, tests, the playground's dev sign-in).</summary>
public static class DevelopmentTokens
{
    public static string Mint(AuthOptions options, string subject, string tenant, IEnumerable<string> roles, TimeSpan lifetime)
    {
        var keys = DevelopmentKeys.Load(options.DevelopmentKeyPath!);
        var now = DateTime.UtcNow;
        var claims = new Dictionary<string, object>
        {
            ["sub"] = subject,
            ["tenant"] = tenant,
            ["roles"] = roles.ToArray(),
            ["jti"] = Guid.NewGuid().ToString("N"),
        };
        var descriptor = new SecurityTokenDescriptor
        {
            Issuer = options.Issuer,
            Audience = options.Audience,
            IssuedAt = now,
            NotBefore = now,
            Expires = now + lifetime,
            Claims = claims,
            Subject = new ClaimsIdentity(),
            SigningCredentials = new SigningCredentials(keys.PrivateKey, SecurityAlgorithms.EcdsaSha256),
        };
        return new JsonWebTokenHandler().CreateToken(descriptor);
    }
}
