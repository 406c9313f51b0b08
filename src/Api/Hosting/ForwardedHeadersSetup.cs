using System.Net;
using Microsoft.AspNetCore.HttpOverrides;
using Sandbox.Audited.Domain.Startup;

namespace Sandbox.Audited.Api.Hosting;

/// <summary>Behind a reverse proxy: which proxies may say who the client is (X-Forwarded-For / -Proto).</summary>
public sealed class ForwardedHeadersSettings
{
    public const string Section = "ForwardedHeaders";

    /// <summary>Off by default: a client's own X-Forwarded-For must never become the recorded address.</summary>
    public bool Enabled { get; set; }

    /// <summary>Proxy addresses trusted to forward; empty = loopback only (a proxy on the same host).</summary>
    public List<string> KnownProxies { get; set; } = [];

    /// <summary>Trusted proxy networks in CIDR form (e.g. 10.0.0.0/24).</summary>
    public List<string> KnownNetworks { get; set; } = [];

    /// <summary>How many proxies in a chain are read from the right of X-Forwarded-For.</summary>
    public int ForwardLimit { get; set; } = 1;
}

public static class ForwardedHeadersSetup
{
    public static IServiceCollection AddForwardedHeadersFrom(this IServiceCollection services, IConfiguration configuration)
    {
        var settings = configuration.GetSection(ForwardedHeadersSettings.Section).Get<ForwardedHeadersSettings>() ?? new ForwardedHeadersSettings();
        services.AddSingleton(settings);
        services.Configure<ForwardedHeadersOptions>(options =>
        {
            options.ForwardedHeaders = ForwardedHeaders.XForwardedFor | ForwardedHeaders.XForwardedProto;
            options.ForwardLimit = settings.ForwardLimit;
            if (settings.KnownProxies.Count > 0 || settings.KnownNetworks.Count > 0)
            {
                options.KnownProxies.Clear();
                options.KnownIPNetworks.Clear();
            }
            foreach (var proxy in settings.KnownProxies)
                options.KnownProxies.Add(IPAddress.TryParse(proxy, out var address) ? address
                    : throw new InvalidSettingException($"ForwardedHeaders:KnownProxies: '{proxy}' is not an IP address."));
            foreach (var network in settings.KnownNetworks)
                options.KnownIPNetworks.Add(System.Net.IPNetwork.TryParse(network, out var parsed) ? parsed
                    : throw new InvalidSettingException($"ForwardedHeaders:KnownNetworks: '{network}' is not a CIDR network."));
        });
        return services;
    }

    /// <summary>First in the pipeline, so that everything after it (the audit record, rate limits) sees the real client.</summary>
    public static IApplicationBuilder UseForwardedHeadersWhenConfigured(this IApplicationBuilder app) =>
        app.ApplicationServices.GetRequiredService<ForwardedHeadersSettings>().Enabled ? app.UseForwardedHeaders() : app;
}
