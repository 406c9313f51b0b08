using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Polly;
using Polly.Retry;
using Sandbox.Audited.Domain.Runs;
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

    // The one retry mechanism for the engine: a removal that fails is tried again while the service runs, not only at the next start.
    private readonly ResiliencePipeline _removal = new ResiliencePipelineBuilder()
        .AddRetry(new RetryStrategyOptions
        {
            ShouldHandle = new PredicateBuilder().Handle<Exception>(e => e is not OperationCanceledException),
            MaxRetryAttempts = Math.Max(0, options.Value.RemovalAttempts - 1),
            BackoffType = DelayBackoffType.Exponential,
            Delay = TimeSpan.FromSeconds(1),
            MaxDelay = TimeSpan.FromSeconds(30),
            UseJitter = true,
            OnRetry = args =>
            {
                LogRemovalRetry(logger, args.Outcome.Exception, args.AttemptNumber + 1, args.RetryDelay.TotalSeconds);
                return ValueTask.CompletedTask;
            },
        })
        .Build();

    public string ImageFor(string runtime) => options.Value.ImageFor(runtime);

    /// <summary>
    /// The content id the runtime's tag names now. Looked up for every sandbox, which is then created from that id:
    /// the id recorded in SandboxCreated is the image that ran, even if the tag is moved to a rebuilt image meanwhile.
    /// </summary>
    public async Task<string> ImageIdAsync(string runtime, CancellationToken ct) =>
        (await docker.InspectImageAsync(ImageFor(runtime), ct)).ID;

    /// <summary>Whether the engine still has an image with this content id (a reproduction needs the original's).</summary>
    public async Task<bool> ImageExistsAsync(string imageId, CancellationToken ct)
    {
        try
        {
            return (await docker.InspectImageAsync(imageId, ct)).ID == imageId;
        }
        catch (global::Docker.DotNet.DockerApiException e) when (e.StatusCode == System.Net.HttpStatusCode.NotFound)
        {
            return false;
        }
    }

    public async Task<PreparedSandbox> CreateAsync(SandboxProfile profile, string runLabel, CancellationToken ct)
    {
        var image = ImageFor(profile.Runtime);
        var imageId = profile.ImageId ?? await ImageIdAsync(profile.Runtime, ct);
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
        catch (Exception e)
        {
            LogCreateFailed(id);
            var removal = await DestroyAsync(id, CancellationToken.None);
            // The container existed: whoever records the run must name it, and whether the engine confirmed its removal.
            throw new SandboxStartException(new CreatedContainer(id, image, imageId, ContainerSpec.Describe(parameters), createdAt), removal, e);
        }
    }

    /// <summary>
    /// Kills and removes a container, retrying while the engine fails. Returns how the engine answered (SandboxRemoval.Removed or
    /// AlreadyGone), or null when every attempt failed: the container is then left to the reaper. Never throws.
    /// </summary>
    public async Task<string?> DestroyAsync(string containerId, CancellationToken ct)
    {
        try
        {
            var removed = await _removal.ExecuteAsync(async token => await docker.RemoveAsync(containerId, token), ct);
            registry.Forget(containerId);
            return removed ? SandboxRemoval.Removed : SandboxRemoval.AlreadyGone;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // Untracked, the reaper removes it once it is a minute old (and records that on its run).
            registry.Forget(containerId);
            LogRemoveFailed(e, containerId, ct.IsCancellationRequested);
            return null;
        }
        catch (OperationCanceledException e)
        {
            // Stopping, or the engine's client cut off (disposed as the process stops, or its own timeout): one line, no trace.
            registry.Forget(containerId);
            if (ct.IsCancellationRequested)
                LogRemoveFailed(null, containerId, true);
            else
                LogRemoveCutOff(containerId, e.Message);
            return null;
        }
    }

    private static string Short(string id) => id.Length > 12 ? id[..12] : id;

    [LoggerMessage(Level = LogLevel.Warning, Message = "Creating sandbox {ContainerId} failed; removing it")]
    private partial void LogCreateFailed(string containerId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Removing sandbox {ContainerId} failed (cancelled: {Cancelled}); the reaper will retry")]
    private partial void LogRemoveFailed(Exception? e, string containerId, bool cancelled);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Removing sandbox {ContainerId} was cut off ({Reason}); the reaper will retry")]
    private partial void LogRemoveCutOff(string containerId, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Removing a sandbox failed; attempt {Attempt} in {Seconds:F1} s")]
    private static partial void LogRemovalRetry(ILogger logger, Exception? e, int attempt, double seconds);
}

public sealed class SandboxException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>What the engine created before the sandbox failed to become ready.</summary>
public sealed record CreatedContainer(string ContainerId, string Image, string ImageId, SandboxSettings Settings, DateTimeOffset CreatedAt);

/// <summary>A container was created but never became a ready sandbox; Removal is how the engine answered its removal (null: not confirmed).</summary>
public sealed class SandboxStartException(CreatedContainer container, string? removal, Exception inner)
    : Exception($"Sandbox {container.ContainerId[..Math.Min(12, container.ContainerId.Length)]} was created but did not become ready: {inner.Message}", inner)
{
    public CreatedContainer Container => container;
    public string? Removal => removal;
}

/// <summary>Every container this process owns right now (pooled or running); the reaper spares these.</summary>
public sealed class SandboxRegistry
{
    private readonly ConcurrentDictionary<string, byte> _live = new();

    public void Track(string containerId) => _live[containerId] = 0;

    public void Forget(string containerId) => _live.TryRemove(containerId, out _);

    public bool Owns(string containerId) => _live.ContainsKey(containerId);

    public int Count => _live.Count;
}
