using Microsoft.Extensions.Options;
using Sandbox.Audited.Audit.Policies;
using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Domain.Runtimes;
using Sandbox.Audited.Executor;
using Sandbox.Audited.Executor.Pool;
using Sandbox.Audited.Executor.Sandboxes;

namespace Sandbox.Audited.Api.Policies;

public enum ReloadOutcome { Activated, Unchanged, Rejected }

public sealed record ReloadResult(ReloadOutcome Outcome, string ActiveDigest, string? PreviousDigest, IReadOnlyList<PolicyError> Errors);

/// <summary>
/// Activates policy bundles: the start-up bundle, then whatever the policy directory holds when its files change
/// (debounced) or an admin asks. A bundle is recorded (content by digest, then PolicyBundleActivated) before any
/// run is decided with it; an invalid bundle is refused, logged and recorded, and the previous one stays active.
/// </summary>
public sealed partial class PolicyReloader(
    PolicyHost host,
    PolicyActivationLog activations,
    SandboxPool pool,
    RuntimeCatalogue catalogue,
    IOptions<PolicyOptions> options,
    IOptions<ExecutorOptions> executor,
    TimeProvider clock,
    ILogger<PolicyReloader> logger) : IHostedService, IDisposable
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private FileSystemWatcher? _watcher;
    private Timer? _debounce;

    public async Task StartAsync(CancellationToken ct)
    {
        // The start-up bundle was loaded (or start-up failed) when PolicyHost was built; record it before serving.
        var bundle = host.Active;
        var now = clock.GetUtcNow();
        await activations.RecordActivationAsync(bundle, null, PolicyActivations.Startup, executor.Value.NodeId, now, ct);
        host.Activate(new ActivePolicy(bundle, now, PolicyActivations.Startup));
        KeepPoolWarm(bundle);
        LogActivated(bundle.Digest, PolicyActivations.Startup, bundle.Files.Count);

        if (options.Value.Watch)
        {
            _debounce = new Timer(_ => _ = ReloadInBackgroundAsync(), null, Timeout.Infinite, Timeout.Infinite);
            _watcher = new FileSystemWatcher(Path.GetFullPath(options.Value.Directory)) { IncludeSubdirectories = false };
            _watcher.Changed += OnChange;
            _watcher.Created += OnChange;
            _watcher.Deleted += OnChange;
            _watcher.Renamed += OnChange;
            _watcher.Error += (_, _) => Schedule();
            _watcher.EnableRaisingEvents = true;
        }
    }

    public Task StopAsync(CancellationToken ct)
    {
        if (_watcher is not null)
            _watcher.EnableRaisingEvents = false;
        _debounce?.Change(Timeout.Infinite, Timeout.Infinite);
        return Task.CompletedTask;
    }

    /// <summary>Loads the directory and activates it unless it is invalid or unchanged. One reload at a time.</summary>
    public async Task<ReloadResult> ReloadAsync(string trigger, CancellationToken ct)
    {
        await _gate.WaitAsync(ct);
        try
        {
            var previous = host.Active;
            PolicyBundle bundle;
            try
            {
                bundle = PolicyDirectory.Load(options.Value.Directory);
            }
            catch (PolicyLoadException e)
            {
                LogRejected(trigger, previous.Digest, e.Message);
                try
                {
                    await activations.RecordRejectionAsync(e.Errors, previous.Digest, trigger, executor.Value.NodeId, clock.GetUtcNow(), ct);
                }
                catch (Exception recordFailure) when (recordFailure is not OperationCanceledException)
                {
                    LogRejectionNotRecorded(recordFailure);
                }
                return new ReloadResult(ReloadOutcome.Rejected, previous.Digest, null, e.Errors);
            }

            if (bundle.Digest == previous.Digest)
                return new ReloadResult(ReloadOutcome.Unchanged, previous.Digest, null, []);

            // Recorded first: if that fails the old bundle stays active and no run is decided unrecorded.
            var now = clock.GetUtcNow();
            await activations.RecordActivationAsync(bundle, previous.Digest, trigger, executor.Value.NodeId, now, ct);
            host.Activate(new ActivePolicy(bundle, now, trigger));
            LogActivated(bundle.Digest, trigger, bundle.Files.Count);
            if (bundle.Defaults != previous.Defaults)
                KeepPoolWarm(bundle);
            return new ReloadResult(ReloadOutcome.Activated, bundle.Digest, previous.Digest, []);
        }
        finally
        {
            _gate.Release();
        }
    }

    // The warm pool holds sandboxes sized for the active defaults, per runtime and class; the pool skips pairs sized 0.
    private void KeepPoolWarm(PolicyBundle bundle) =>
        pool.KeepWarm(catalogue.All.SelectMany(r => Isolation.All.Select(c => SandboxProfile.For(r.Id, r.Language, c, bundle.Defaults))));

    private void OnChange(object sender, FileSystemEventArgs e)
    {
        if (IsPolicyFile(e.FullPath) || e is RenamedEventArgs { OldFullPath: var old } && IsPolicyFile(old))
            Schedule();
    }

    // Editors write files in several steps; reload once the directory has been quiet for a moment.
    private void Schedule() => _debounce?.Change(options.Value.ReloadDebounceMs, Timeout.Infinite);

    private async Task ReloadInBackgroundAsync()
    {
        try
        {
            await ReloadAsync(PolicyActivations.FileChange, CancellationToken.None);
        }
        catch (Exception e)
        {
            LogReloadFailed(e);
        }
    }

    private static bool IsPolicyFile(string path) => Path.GetExtension(path).ToLowerInvariant() is ".yaml" or ".yml";

    public void Dispose()
    {
        _watcher?.Dispose();
        _debounce?.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Policy bundle {Digest} activated ({Trigger}, {FileCount} files)")]
    private partial void LogActivated(string digest, string trigger, int fileCount);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Policy bundle refused ({Trigger}); {ActiveDigest} stays active. {Errors}")]
    private partial void LogRejected(string trigger, string activeDigest, string errors);

    [LoggerMessage(Level = LogLevel.Error, Message = "The policy bundle refusal could not be recorded")]
    private partial void LogRejectionNotRecorded(Exception e);

    [LoggerMessage(Level = LogLevel.Error, Message = "Reloading the policy bundle failed; the previous bundle stays active")]
    private partial void LogReloadFailed(Exception e);
}
