using Microsoft.OpenApi;
using Scalar.AspNetCore;

namespace Sandbox.Audited.Api.Hosting;

/// <summary>The OpenAPI document (/openapi/v1.json) with the bearer scheme, and Scalar's interactive docs at /docs.</summary>
public static class ApiDocs
{
    public const string BearerScheme = "Bearer";

    public static IServiceCollection AddApiDocs(this IServiceCollection services) =>
        services.AddOpenApi(options => ApiContract.AddTo(options.AddDocumentTransformer((document, _, _) =>
        {
            document.Info.Title = "Sandbox.Audited API";
            document.Info.Description = "Run untrusted code in locked-down containers with a tamper-evident audit record. Errors are RFC 9457 problem details.";
            document.Components ??= new OpenApiComponents();
            document.Components.SecuritySchemes ??= new Dictionary<string, IOpenApiSecurityScheme>();
            document.Components.SecuritySchemes[BearerScheme] = new OpenApiSecurityScheme
            {
                Type = SecuritySchemeType.Http,
                Scheme = "bearer",
                BearerFormat = "JWT",
                Description = "An access token from the configured OpenID Connect issuer (or `./sbx token` in development).",
            };
            document.Security = [new OpenApiSecurityRequirement { [new OpenApiSecuritySchemeReference(BearerScheme, document)] = [] }];
            return Task.CompletedTask;
        })));

    public static void MapApiDocs(this WebApplication app)
    {
        app.MapOpenApi("/openapi/{documentName}.json");

        // /docs loads nothing from outside this origin: no CDN fonts, no telemetry, no vendor AI/MCP/SDK features; the
        // page gets the web pages' headers, its inline start-up script a per-request nonce.
        app.UseWhen(http => http.Request.Path.StartsWithSegments("/docs"), docs => docs.Use((http, next) =>
        {
            http.Response.Headers.XContentTypeOptions = "nosniff";
            http.Response.Headers["Referrer-Policy"] = "no-referrer";
            http.Response.Headers.XFrameOptions = "DENY";
            return next(http);
        }));
        app.MapScalarApiReference("/docs", (options, http) =>
        {
            var nonce = Convert.ToBase64String(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16));
            http.Response.Headers.ContentSecurityPolicy = ContentSecurityPolicy(nonce);
            options
                .WithTitle("Sandbox.Audited API")
                .WithOpenApiRoutePattern("/openapi/{documentName}.json")
                .DisableDefaultFonts()
                .DisableTelemetry()
                .DisableAgent()
                .DisableMcp()
                .HideDeveloperTools()
                .HideClientButton()
                .WithCustomCss(NoVendorLinks);
            options.Nonce = nonce;
        });
    }

    // The reference's footer links to the vendor ("Powered by …"); the docs of a self-hosted service link nowhere else.
    private const string NoVendorLinks = "a[href*=\"scalar.com\"] { display: none !important; }";

    /// <summary>The web pages' policy (src/Api/Web), with the nonce of Scalar's inline start-up script.</summary>
    public static string ContentSecurityPolicy(string nonce) =>
        Web.WebPages.ContentSecurityPolicy.Replace("script-src 'self'", $"script-src 'self' 'nonce-{nonce}'", StringComparison.Ordinal);
}
