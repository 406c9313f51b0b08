using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace Sandbox.Audited.Tests.Infrastructure;

/// <summary>
/// A byte-level forwarder from a loopback port of the test's own to a loopback server (PostgreSQL): Cut makes the server
/// "away" for whoever connects through it (every open connection breaks, new ones are refused), Resume brings it back —
/// without touching the shared server or its other clients.
/// </summary>
public sealed class TcpProxy : IAsyncDisposable
{
    private readonly IPEndPoint _upstream;
    private readonly ConcurrentDictionary<Socket, byte> _open = new();
    private CancellationTokenSource _stop = new();
    private Socket? _listener;
    private Task? _accepting;

    public TcpProxy(IPEndPoint upstream)
    {
        _upstream = upstream;
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        Port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
    }

    public int Port { get; }

    public void Resume()
    {
        _stop = new CancellationTokenSource();
        _listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, Port));
        _listener.Listen(64);
        _accepting = AcceptAsync(_listener, _stop.Token);
    }

    /// <summary>The server goes away: no new connections, and every open one is cut.</summary>
    public async Task CutAsync()
    {
        await _stop.CancelAsync();
        _listener?.Dispose();
        if (_accepting is not null)
            await _accepting;
        foreach (var socket in _open.Keys)
            socket.Dispose();
    }

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
        using (var server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            _open[client] = 0;
            _open[server] = 0;
            try
            {
                await server.ConnectAsync(_upstream, ct);
                await Task.WhenAny(PumpAsync(client, server, ct), PumpAsync(server, client, ct));
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
    }

    public async ValueTask DisposeAsync() => await CutAsync();
}
