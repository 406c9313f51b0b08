using Microsoft.OpenApi;
using Scalar.AspNetCore;

namespace Sandbox.Audited.Api.Hosting;

/// <summary>The OpenAPI document (/openapi/v1.json) with the bearer scheme, and Scalar's interactive docs at /docs.</summary>
public static class ApiDocs
{
    public const string BearerScheme = "Bearer";

    public static IServiceCollection AddApiDocs(this IServiceCollection services) =>
        services.AddOpenApi(options => options.AddDocumentTransformer((document, _, _) =>
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
        }));

    public static void MapApiDocs(this WebApplication app)
    {
        app.MapOpenApi("/openapi/{documentName}.json");
        app.MapScalarApiReference("/docs", options => options
            .WithTitle("Sandbox.Audited API")
            .WithOpenApiRoutePattern("/openapi/{documentName}.json"));
    }
}
