using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Sandbox.Audited.Executor.Docker;

namespace Sandbox.Audited.Executor.Sandboxes;

/// <summary>Creates, attaches and starts one sandbox and waits until its supervisor is ready.</summary>
public sealed partial class SandboxFactory(
    DockerEngine docker,
    SandboxRegistry registry,
    IOptions<ExecutorOptions> options,
    TimeProvider clock,
    ILogger<SandboxFactory> logger)
{
    private static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(20);

    public string ImageFor(string runtime) => options.Value.ImageFor(runtime);

    /// <summary>
    /// The content id the runtime's tag names now. Looked up for every sandbox, which is then created from that id:
    /// the id recorded in SandboxCreated is the image that ran, even if the tag is moved to a rebuilt image meanwhile.
    /// </summary>
    public async Task<string> ImageIdAsync(string runtime, CancellationToken ct) =>
        (await docker.InspectImageAsync(ImageFor(runtime), ct)).ID;

    public async Task<PreparedSandbox> CreateAsync(SandboxProfile profile, string runLabel, CancellationToken ct)
    {
        var image = ImageFor(profile.Runtime);
        var imageId = await ImageIdAsync(profile.Runtime, ct);
        var parameters = ContainerSpec.Build(profile, imageId, options.Value.OciRuntimeFor(profile.Isolation), options.Value.NodeId, runLabel);
        var createdAt = clock.GetUtcNow();
        // Not cancellable: the engine would create the container anyway and nobody would know its id to remove it.
        var id = await docker.CreateAsync(parameters, CancellationToken.None);
        registry.Track(id);
        try
        {
            ct.ThrowIfCancellationRequested();
            var stream = await docker.AttachAsync(id, ct);
            var reader = new FrameReader(stream);
            await docker.StartAsync(id, ct);
            var startedAt = clock.GetUtcNow();

            using var ready = CancellationTokenSource.CreateLinkedTokenSource(ct);
            ready.CancelAfter(ReadyTimeout);
            var frame = await reader.NextAsync(ready.Token);
            if (frame is not { Type: SupervisorProtocol.Ready })
                throw new SandboxException(
                    $"Sandbox {Short(id)} did not report ready (got {(frame is null ? "end of stream" : (char)frame.Value.Type)}). {reader.Diagnostics}".Trim());

            return new PreparedSandbox(id, profile, image, imageId, ContainerSpec.Describe(parameters), stream, reader, createdAt, startedAt, fromPool: false);
        }
        catch
        {
            LogCreateFailed(id);
            await DestroyAsync(id, CancellationToken.None);
            throw;
        }
    }

    /// <summary>Kills and removes a container; never throws (the reaper is the safety net).</summary>
    public async Task DestroyAsync(string containerId, CancellationToken ct)
    {
        try
        {
            await docker.RemoveAsync(containerId, ct);
            registry.Forget(containerId);
        }
        catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            LogRemoveFailed(e, containerId, ct.IsCancellationRequested);
        }
    }

    private static string Short(string id) => id.Length > 12 ? id[..12] : id;

    [LoggerMessage(Level = LogLevel.Warning, Message = "Creating sandbox {ContainerId} failed; removing it")]
    private partial void LogCreateFailed(string containerId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Removing sandbox {ContainerId} failed (cancelled: {Cancelled}); the reaper will retry")]
    private partial void LogRemoveFailed(Exception e, string containerId, bool cancelled);
}

public sealed class SandboxException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>Every container this process owns right now (pooled or running); the reaper spares these.</summary>
public sealed class SandboxRegistry
{
    private readonly ConcurrentDictionary<string, byte> _live = new();

    public void Track(string containerId) => _live[containerId] = 0;

    public void Forget(string containerId) => _live.TryRemove(containerId, out _);

    public bool Owns(string containerId) => _live.ContainsKey(containerId);

    public int Count => _live.Count;
}
