using System.Net.Sockets;
using System.Text;

namespace Sandbox.Audited.Tests.Infrastructure;

/// <summary>HTTP/1.1 requests written byte for byte: their request target reaches the server untouched by any client library.</summary>
public static class RawHttp
{
    /// <summary>Sends GET target with a bearer token to the service at baseUrl; returns the whole answer, status line to body.</summary>
    public static async Task<string> GetAsync(string baseUrl, string target, string bearer)
    {
        var address = new Uri(baseUrl);
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(address.Host, address.Port);
        await using var stream = tcp.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes(
            $"GET {target} HTTP/1.1\r\nHost: {address.Authority}\r\nAuthorization: Bearer {bearer}\r\nConnection: close\r\n\r\n"));
        using var reader = new StreamReader(stream);
        return await reader.ReadToEndAsync();
    }
}
