using System.Net;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Browser;

/// <summary>The real service on Kestrel at a free loopback port, so that a real browser can reach it.</summary>
public sealed class BrowserFixture : ServiceFixture
{
    public string BaseUrl => Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();

    protected override void ConfigureFactory(WebApplicationFactory<Program> factory) =>
        factory.UseKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, 0));
}

[CollectionDefinition(Name)]
public sealed class BrowserCollection : ICollectionFixture<BrowserFixture>
{
    public const string Name = "browser";
}
