using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace Sandbox.Audited.Tests.Infrastructure;

/// <summary>
/// A byte-level forwarder from an endpoint of the test's own to a real server (the Docker socket, PostgreSQL). Before
/// Start, or after Stop, the server is "away" for whoever connects through it: new connections are refused and every open
/// one (attach streams included) breaks, as when the server restarts — without touching the shared server or its other
/// clients. Half-closes are passed on, since attach streams close their write side to end stdin.
/// </summary>
public sealed class SocketProxy : IAsyncDisposable
{
    private readonly EndPoint _listen;
    private readonly EndPoint _upstream;
    private readonly ConcurrentDictionary<Socket, byte> _open = new();
    private CancellationTokenSource _stop = new();
    private Socket? _listener;
    private Task? _accepting;

    private SocketProxy(EndPoint listen, EndPoint upstream)
    {
        _listen = listen;
        _upstream = upstream;
    }

    /// <summary>A unix socket at path in front of the one at upstream (by default the Docker engine's).</summary>
    public static SocketProxy Unix(string path, string upstream = "/var/run/docker.sock") =>
        new(new UnixDomainSocketEndPoint(path), new UnixDomainSocketEndPoint(upstream));

    /// <summary>A free loopback port in front of a TCP server.</summary>
    public static SocketProxy Tcp(IPEndPoint upstream)
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        var port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        return new SocketProxy(new IPEndPoint(IPAddress.Loopback, port), upstream);
    }

    /// <summary>The loopback port clients connect to (TCP proxies).</summary>
    public int Port => ((IPEndPoint)_listen).Port;

    /// <summary>The Docker endpoint clients connect to (unix proxies).</summary>
    public string Endpoint => "unix://" + _listen;

    /// <summary>The server is there again for whoever connects through the proxy.</summary>
    public void Start()
    {
        if (_listen is UnixDomainSocketEndPoint)
            File.Delete(_listen.ToString()!);
        _stop = new CancellationTokenSource();
        _listener = NewSocket(_listen);
        if (_listen is IPEndPoint)
            _listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        _listener.Bind(_listen);
        _listener.Listen(64);
        _accepting = AcceptAsync(_listener, _stop.Token);
    }

    /// <summary>The server goes away: no new connections, and every open one is cut.</summary>
    public async Task StopAsync()
    {
        await _stop.CancelAsync();
        _listener?.Dispose();
        if (_accepting is not null)
            await _accepting;
        foreach (var socket in _open.Keys)
            socket.Dispose();
        if (_listen is UnixDomainSocketEndPoint)
            File.Delete(_listen.ToString()!);
    }

    private static Socket NewSocket(EndPoint endpoint) =>
        new(endpoint.AddressFamily, SocketType.Stream, endpoint is UnixDomainSocketEndPoint ? ProtocolType.Unspecified : ProtocolType.Tcp);

    private async Task AcceptAsync(Socket listener, CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await listener.AcceptAsync(ct);
            }
            catch (Exception) when (ct.IsCancellationRequested)
            {
                return;
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            _ = ForwardAsync(client, ct);
        }
    }

    private async Task ForwardAsync(Socket client, CancellationToken ct)
    {
        using (client)
        using (var server = NewSocket(_upstream))
        {
            _open[client] = 0;
            _open[server] = 0;
            try
            {
                await server.ConnectAsync(_upstream, ct);
                await Task.WhenAll(PumpAsync(client, server, ct), PumpAsync(server, client, ct));
            }
            catch (Exception)
            {
                // A connection that breaks ends here; the client sees it closed, as when the server goes away.
            }
            finally
            {
                _open.TryRemove(client, out _);
                _open.TryRemove(server, out _);
            }
        }
    }

    private static async Task PumpAsync(Socket from, Socket to, CancellationToken ct)
    {
        var buffer = new byte[64 * 1024];
        int read;
        while ((read = await from.ReceiveAsync(buffer, SocketFlags.None, ct)) > 0)
            await to.SendAsync(buffer.AsMemory(0, read), SocketFlags.None, ct);
        to.Shutdown(SocketShutdown.Send);
    }

    public async ValueTask DisposeAsync() => await StopAsync();
}
