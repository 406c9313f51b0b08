using Docker.DotNet;
using Docker.DotNet.Models;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Sandbox.Audited.Executor.Docker;

/// <summary>A thin wrapper over the Docker Engine API: one method per verb, a deadline on every call.</summary>
public sealed partial class DockerEngine : IDisposable
{
    private readonly DockerClient _client;
    private readonly TimeSpan _callTimeout;
    private readonly ILogger<DockerEngine> _logger;

    public DockerEngine(IOptions<ExecutorOptions> options, ILogger<DockerEngine> logger)
    {
        _client = new DockerClientConfiguration(new Uri(options.Value.DockerEndpoint), defaultTimeout: Timeout.InfiniteTimeSpan).CreateClient();
        _callTimeout = TimeSpan.FromMilliseconds(options.Value.DockerCallTimeoutMs);
        _logger = logger;
    }

    public async Task PingAsync(CancellationToken ct)
    {
        using var cts = Deadline(ct, TimeSpan.FromSeconds(2));
        await _client.System.PingAsync(cts.Token);
    }

    /// <summary>The OCI runtimes the engine has registered (runc, and runsc once `sbx up` added it).</summary>
    public async Task<IReadOnlyCollection<string>> OciRuntimesAsync(CancellationToken ct)
    {
        using var cts = Deadline(ct);
        return (await _client.System.GetSystemInfoAsync(cts.Token)).Runtimes?.Keys.ToList() ?? [];
    }

    public async Task<ImageInspectResponse> InspectImageAsync(string image, CancellationToken ct)
    {
        using var cts = Deadline(ct);
        return await _client.Images.InspectImageAsync(image, cts.Token);
    }

    public async Task<string> CreateAsync(CreateContainerParameters parameters, CancellationToken ct)
    {
        using var cts = Deadline(ct);
        var response = await _client.Containers.CreateContainerAsync(parameters, cts.Token);
        return response.ID;
    }

    /// <summary>Attaches stdin/stdout/stderr; call before start so that nothing the container writes is missed.</summary>
    public async Task<MultiplexedStream> AttachAsync(string id, CancellationToken ct)
    {
        using var cts = Deadline(ct);
        return await _client.Containers.AttachContainerAsync(
            id, tty: false,
            new ContainerAttachParameters { Stream = true, Stdin = true, Stdout = true, Stderr = true },
            cts.Token);
    }

    public async Task StartAsync(string id, CancellationToken ct)
    {
        using var cts = Deadline(ct);
        await _client.Containers.StartContainerAsync(id, new ContainerStartParameters(), cts.Token);
    }

    public async Task<ContainerInspectResponse> InspectAsync(string id, CancellationToken ct)
    {
        using var cts = Deadline(ct);
        return await _client.Containers.InspectContainerAsync(id, cts.Token);
    }

    public async Task<ContainerWaitResponse> WaitAsync(string id, TimeSpan timeout, CancellationToken ct)
    {
        using var cts = Deadline(ct, timeout);
        return await _client.Containers.WaitContainerAsync(id, cts.Token);
    }

    /// <summary>
    /// Whether the engine logged an `oom` event for the container between since and until (both on the engine's clock). The
    /// engine answers from the events it keeps (its last 256) and, while until is ahead, streams new ones until then; the
    /// call returns as soon as one arrives.
    /// </summary>
    public async Task<bool> OomEventLoggedAsync(string id, DateTimeOffset since, DateTimeOffset until, CancellationToken ct)
    {
        var listen = until - DateTimeOffset.UtcNow;
        using var cts = Deadline(ct, (listen > TimeSpan.Zero ? listen : TimeSpan.Zero) + _callTimeout);
        var seen = new FirstEvent(cts);
        try
        {
            await _client.System.MonitorEventsAsync(new ContainerEventsParameters
            {
                Since = EngineTime(since),
                Until = EngineTime(until),
                Filters = new Dictionary<string, IDictionary<string, bool>>
                {
                    ["container"] = new Dictionary<string, bool> { [id] = true },
                    ["type"] = new Dictionary<string, bool> { ["container"] = true },
                    ["event"] = new Dictionary<string, bool> { ["oom"] = true },
                },
            }, seen, cts.Token);
        }
        catch (OperationCanceledException) when (seen.Arrived && !ct.IsCancellationRequested)
        {
            // Stopped listening on purpose: the event is in.
        }
        return seen.Arrived;
    }

    // The engine reads "seconds.nanoseconds" since the Unix epoch.
    private static string EngineTime(DateTimeOffset t)
    {
        var ticks = t.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks;
        return $"{ticks / TimeSpan.TicksPerSecond}.{ticks % TimeSpan.TicksPerSecond * 100:D9}";
    }

    /// <summary>Notes the first event reported and stops the listening call; reported on the reading thread, not posted.</summary>
    private sealed class FirstEvent(CancellationTokenSource stop) : IProgress<Message>
    {
        private volatile bool _arrived;

        public bool Arrived => _arrived;

        public void Report(Message value)
        {
            _arrived = true;
            stop.Cancel();
        }
    }

    public async Task KillAsync(string id, CancellationToken ct)
    {
        using var cts = Deadline(ct);
        try
        {
            await _client.Containers.KillContainerAsync(id, new ContainerKillParameters { Signal = "KILL" }, cts.Token);
        }
        catch (DockerApiException e) when (e.StatusCode is System.Net.HttpStatusCode.Conflict or System.Net.HttpStatusCode.NotFound)
        {
            // Already stopped or gone: that is what we wanted.
        }
    }

    /// <summary>
    /// Force-removes a container and its anonymous volumes. True when the engine removed it, false when it answered that no
    /// such container exists; any other answer (including "removal already in progress") throws, so the caller retries.
    /// </summary>
    public async Task<bool> RemoveAsync(string id, CancellationToken ct)
    {
        using var cts = Deadline(ct);
        try
        {
            await _client.Containers.RemoveContainerAsync(id, new ContainerRemoveParameters { Force = true, RemoveVolumes = true }, cts.Token);
            return true;
        }
        catch (DockerContainerNotFoundException)
        {
            return false;
        }
    }

    public async Task<IList<ContainerListResponse>> ListByLabelAsync(string label, CancellationToken ct)
    {
        using var cts = Deadline(ct);
        return await _client.Containers.ListContainersAsync(new ContainersListParameters
        {
            All = true,
            Filters = new Dictionary<string, IDictionary<string, bool>> { ["label"] = new Dictionary<string, bool> { [label] = true } },
        }, cts.Token);
    }

    public void Dispose() => _client.Dispose();

    private CancellationTokenSource Deadline(CancellationToken ct, TimeSpan? timeout = null)
    {
        var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout ?? _callTimeout);
        return cts;
    }
}
