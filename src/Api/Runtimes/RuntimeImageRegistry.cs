using System.Collections.Concurrent;
using Microsoft.Extensions.Options;
using Sandbox.Audited.Audit.Runtimes;
using Sandbox.Audited.Domain.Runtimes;
using Sandbox.Audited.Domain.Text;
using Sandbox.Audited.Executor;
using Sandbox.Audited.Executor.Docker;

namespace Sandbox.Audited.Api.Runtimes;

/// <summary>
/// What this installation knows about each runtime image: recorded (RuntimeImageRecorded, SBOM stored) the first time
/// the service sees an image id, at start-up for every catalogue runtime and again before any sandbox of a new image runs.
/// </summary>
public sealed partial class RuntimeImageRegistry(
    RuntimeCatalogue catalogue,
    DockerEngine docker,
    RuntimeImageLog log,
    IOptions<ExecutorOptions> executor,
    IOptions<RuntimeOptions> options,
    TimeProvider clock,
    ILogger<RuntimeImageRegistry> logger) : IHostedService
{
    public const string SbomLabel = "sandbox.audited.sbom";

    private readonly ConcurrentDictionary<string, Lazy<Task<RuntimeImageRecorded>>> _known = new();
    private readonly SemaphoreSlim _recording = new(1, 1);

    /// <summary>The image a runtime's tag names now, recorded if it is new.</summary>
    public async Task<RuntimeImageRecorded> CurrentAsync(RuntimeDefinition runtime, CancellationToken ct)
    {
        var image = await docker.InspectImageAsync(executor.Value.ImageFor(runtime.Id), ct);
        return await RecordedAsync(runtime, image.ID, ct);
    }

    /// <summary>The record of an image id, written the first time this or any node saw it. Never records twice per process.</summary>
    public async Task<RuntimeImageRecorded> RecordedAsync(RuntimeDefinition runtime, string imageId, CancellationToken ct)
    {
        var entry = _known.GetOrAdd(imageId, id => new Lazy<Task<RuntimeImageRecorded>>(() => RecordAsync(runtime, id)));
        try
        {
            return await entry.Value.WaitAsync(ct);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _known.TryRemove(new KeyValuePair<string, Lazy<Task<RuntimeImageRecorded>>>(imageId, entry));
            throw;
        }
    }

    /// <summary>For a run's SandboxCreated: the image's record, or null (logged) when it cannot be had; the run goes on.</summary>
    public async Task<RuntimeImageRecorded?> TryRecordedAsync(string runtimeId, string imageId, CancellationToken ct)
    {
        if (catalogue.Find(runtimeId) is not { } runtime)
            return null;
        try
        {
            return await RecordedAsync(runtime, imageId, ct);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            LogRecordFailed(e, runtimeId, imageId);
            return null;
        }
    }

    public async Task StartAsync(CancellationToken ct)
    {
        foreach (var runtime in catalogue.All)
        {
            try
            {
                var recorded = await CurrentAsync(runtime, ct);
                LogKnown(runtime.Id, recorded.ImageId, recorded.LayerDigest, recorded.SbomDigest);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // A runtime whose image is not built yet is listed as unavailable; runs naming it fail like a missing image.
                LogUnavailable(runtime.Id, e.GetBaseException().Message);
            }
        }
    }

    public Task StopAsync(CancellationToken ct) => Task.CompletedTask;

    private async Task<RuntimeImageRecorded> RecordAsync(RuntimeDefinition runtime, string imageId)
    {
        var ct = CancellationToken.None;
        await _recording.WaitAsync(ct);
        try
        {
            if ((await log.RecordedAsync(ct)).LastOrDefault(r => r.ImageId == imageId && r.RuntimeId == runtime.Id) is { } known)
                return known;
            var image = await docker.InspectImageAsync(imageId, ct);
            var layers = image.RootFS?.Layers ?? [];
            var label = image.Config?.Labels is { } labels && labels.TryGetValue(SbomLabel, out var value) ? value : null;
            var (sbomDigest, sbom) = ReadSbom(runtime.Id, label);
            var recorded = new RuntimeImageRecorded(RuntimeImageStream.StreamId, runtime.Id, runtime.Language,
                executor.Value.ImageFor(runtime.Id), image.ID,
                // An imported image has exactly one layer; its diff id is the SHA-256 of the tar it was made from.
                layers.Count == 1 ? layers[0] : null,
                sbomDigest, image.Size, executor.Value.NodeId, clock.GetUtcNow());
            await log.RecordAsync(recorded, sbom, ct);
            return recorded;
        }
        finally
        {
            _recording.Release();
        }
    }

    // The SBOM file build-images.sh stored by digest; content that does not hash to the label is not trusted.
    private (string? Digest, string? Content) ReadSbom(string runtimeId, string? label)
    {
        if (label is null || !label.StartsWith("sha256:", StringComparison.Ordinal) || label.Length != 71 || !label[7..].All(char.IsAsciiHexDigitLower))
        {
            LogNoSbom(runtimeId, "the image has no sandbox.audited.sbom label");
            return (null, null);
        }
        var path = Path.Combine(options.Value.SbomDirectory, label[7..] + ".spdx.json");
        if (!File.Exists(path))
        {
            LogNoSbom(runtimeId, $"{path} does not exist");
            return (null, null);
        }
        var content = Utf8Text.Strict.GetString(File.ReadAllBytes(path));
        if (RuntimeImageLog.DigestOf(content) != label)
        {
            LogNoSbom(runtimeId, $"{path} does not hash to {label}");
            return (null, null);
        }
        return (label, content);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Runtime {RuntimeId}: image {ImageId}, layer {LayerDigest}, SBOM {SbomDigest}")]
    private partial void LogKnown(string runtimeId, string imageId, string? layerDigest, string? sbomDigest);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Runtime {RuntimeId} is unavailable: {Reason}")]
    private partial void LogUnavailable(string runtimeId, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Runtime {RuntimeId}: no bill of materials recorded ({Reason}); rebuild its image with build-images.sh")]
    private partial void LogNoSbom(string runtimeId, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Runtime {RuntimeId}: recording image {ImageId} failed")]
    private partial void LogRecordFailed(Exception e, string runtimeId, string imageId);
}
