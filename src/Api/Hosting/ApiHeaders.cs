namespace Sandbox.Audited.Api.Hosting;

/// <summary>Headers every API answer carries: runs, events and audit pages hold code and output, so no cache keeps them.</summary>
public static class ApiHeaders
{
    public static IApplicationBuilder UseNoStoreForApi(this IApplicationBuilder app) => app.Use((http, next) =>
    {
        if (http.Request.Path.StartsWithSegments("/v1"))
            http.Response.OnStarting(() =>
            {
                http.Response.Headers.CacheControl = "no-store";
                return Task.CompletedTask;
            });
        return next(http);
    });

    /// <summary>No `Server: Kestrel` banner: it tells an attacker which server and version to aim at, and a client nothing.</summary>
    public static WebApplicationBuilder WithoutServerBanner(this WebApplicationBuilder builder)
    {
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.AddServerHeader = false);
        return builder;
    }
}
