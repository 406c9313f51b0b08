using System.Net.Sockets;

namespace Sandbox.Audited.Tests.Executor;

/// <summary>
/// A byte-level forwarder from a unix socket of the test's own to the real Docker socket. Before Start it does
/// not exist (the engine is "away"); after Start the engine "returns" — without touching the shared engine.
/// Half-closes are passed on, since attach streams close their write side to end stdin. Stop makes the engine go away
/// again: the socket disappears and every open connection (attach streams included) breaks, as when dockerd restarts.
/// </summary>
public sealed class DockerSocketProxy(string path, string upstream = "/var/run/docker.sock") : IAsyncDisposable
{
    private CancellationTokenSource _stop = new();
    private readonly System.Collections.Concurrent.ConcurrentDictionary<Socket, byte> _open = new();
    private Socket? _listener;
    private Task? _accepting;

    public string Endpoint => "unix://" + path;

    public void Start()
    {
        File.Delete(path);
        _stop = new CancellationTokenSource();
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(path));
        _listener.Listen(64);
        _accepting = AcceptAsync(_listener, _stop.Token);
    }

    /// <summary>The engine goes away: no new connections, and every open one is cut.</summary>
    public async Task StopAsync()
    {
        await _stop.CancelAsync();
        _listener?.Dispose();
        if (_accepting is not null)
            await _accepting;
        foreach (var socket in _open.Keys)
            socket.Dispose();
        File.Delete(path);
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
            _ = ForwardAsync(client, ct);
        }
    }

    private async Task ForwardAsync(Socket client, CancellationToken ct)
    {
        using (client)
        using (var server = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            _open[client] = 0;
            _open[server] = 0;
            try
            {
                await server.ConnectAsync(new UnixDomainSocketEndPoint(upstream), ct);
                await Task.WhenAll(PumpAsync(client, server, ct), PumpAsync(server, client, ct));
            }
            catch (Exception)
            {
                // A connection that breaks ends here; the client sees it closed, as with the real socket.
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
        var buffer = new byte[81920];
        int read;
        while ((read = await from.ReceiveAsync(buffer, SocketFlags.None, ct)) > 0)
            await to.SendAsync(buffer.AsMemory(0, read), SocketFlags.None, ct);
        to.Shutdown(SocketShutdown.Send);
    }

    public async ValueTask DisposeAsync() => await StopAsync();
}
