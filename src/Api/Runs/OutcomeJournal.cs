using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Marten;
using Microsoft.Extensions.Options;
using Polly;
using Polly.Retry;
using Sandbox.Audited.Api.Metrics;
using Sandbox.Audited.Api.Streaming;
using Sandbox.Audited.Audit.Events;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Audit.Queue;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Executor;

namespace Sandbox.Audited.Api.Runs;

/// <summary>An output the journal keeps in a file of its own beside the outcome, copied from its capture (never held whole in memory).</summary>
public sealed record KeptContent(string Sha256, long Bytes, Func<CancellationToken, Task<Stream>> Open);

/// <summary>
/// The one exception to "the audit is committed before the answer": a run that touched a sandbox and whose outcome commit
/// failed (PostgreSQL away) keeps its events, with their original timestamps, in one fsynced file per run under
/// Executor:JournalDirectory/{node}. The client is answered 202 "recording"; this worker commits the file when the store
/// returns (retrying with backoff), then deletes it. Start-up recovery commits what a previous process journaled before it
/// abandons anything.
/// </summary>
public sealed partial class OutcomeJournal : BackgroundService
{
    private static readonly IReadOnlyDictionary<string, Type> Types = EventCatalog.Names.ToDictionary(p => p.Value, p => p.Key);

    private readonly IDocumentStore _store;
    private readonly EvidenceStore _evidence;
    private readonly RunFeed _feed;
    private readonly RunQueue _queue;
    private readonly ILogger<OutcomeJournal> _logger;
    private readonly SemaphoreSlim _wake = new(0);
    private readonly ResiliencePipeline _retry;
    private readonly string _node;
    private readonly RunMetrics? _metrics;

    // Rejections of each file this process saw (by PostgreSQL for its data, or unreadable here); at the bound it is set aside.
    private readonly Dictionary<string, int> _rejections = new(StringComparer.Ordinal);

    /// <summary>Times a file must fail for its data (not an outage: PostgreSQL refuses it, or this version cannot read it) before it is set aside under rejected/.</summary>
    public const int RejectionsBeforeSetAside = 3;

    public OutcomeJournal(IDocumentStore store, EvidenceStore evidence, RunFeed feed, RunQueue queue, IOptions<ExecutorOptions> options,
        ILogger<OutcomeJournal> logger, RunMetrics? metrics = null)
    {
        _store = store;
        _evidence = evidence;
        _feed = feed;
        _queue = queue;
        _logger = logger;
        _metrics = metrics;
        _node = options.Value.NodeId;
        Directory = Path.Combine(options.Value.JournalDirectory, options.Value.NodeId);
        _retry = new ResiliencePipelineBuilder()
            .AddRetry(new RetryStrategyOptions
            {
                ShouldHandle = new PredicateBuilder().Handle<Exception>(e => e is not (OperationCanceledException or JsonException)),
                MaxRetryAttempts = int.MaxValue,
                BackoffType = DelayBackoffType.Exponential,
                Delay = TimeSpan.FromMilliseconds(250),
                MaxDelay = TimeSpan.FromSeconds(2),
                UseJitter = true,
                OnRetry = args =>
                {
                    if (args.AttemptNumber % 10 == 0)
                        LogStillWaiting(args.Outcome.Exception, args.AttemptNumber + 1);
                    return ValueTask.CompletedTask;
                },
            })
            .Build();
    }

    /// <summary>This node's journal folder.</summary>
    public string Directory { get; }

    /// <summary>Where files set aside for good are kept for the operator (never committed, never deleted).</summary>
    public string RejectedDirectory => Path.Combine(Directory, "rejected");

    /// <summary>Runs whose outcome waits here right now.</summary>
    public int Pending => System.IO.Directory.Exists(Directory) ? System.IO.Directory.GetFiles(Directory, "*.json").Length : 0;

    public bool Holds(Guid runId) => File.Exists(PathOf(runId));

    /// <summary>Runs whose outcome waits in this node's journal (file names begin with the run id).</summary>
    public IReadOnlyCollection<Guid> HeldRunIds() =>
        Files().Select(f => Guid.TryParse(Path.GetFileName(f).Split('.')[0], out var id) ? id : Guid.Empty).Where(id => id != Guid.Empty).Distinct().ToList();

    /// <summary>Runs whose outcome this node set aside under rejected/: never committed, kept for the operator, and so are the contents they name.</summary>
    public IReadOnlyCollection<Guid> SetAsideRunIds() =>
        (System.IO.Directory.Exists(RejectedDirectory) ? System.IO.Directory.GetFiles(RejectedDirectory, "*.json") : [])
            .Select(f => Guid.TryParse(Path.GetFileName(f).Split('.')[0], out var id) ? id : Guid.Empty).Where(id => id != Guid.Empty).Distinct().ToList();

    /// <summary>
    /// Writes the events to disk and fsyncs them, then the directory that names them; only then may the client be answered. Throws if the disk fails too. A later
    /// part of a run already journaled (its SandboxRemoved) goes to its own file, committed only after the run's first one.
    /// Contents are the outputs the events name by digest that were to commit with them: kept alongside, stored with the
    /// events when they are committed, so that the record is the same whichever path wrote it. Spooled are outputs the store
    /// was away for: each is copied from its capture into {run}.{sha256}.content (fsynced before the outcome's file), so that
    /// an outage holds none of them in memory, whatever their number and size.
    /// </summary>
    public async Task KeepAsync(RunStream stream, IReadOnlyList<object> events, string? part = null, IReadOnlyList<ReadOnlyMemory<byte>>? contents = null,
        IReadOnlyList<KeptContent>? spooled = null)
    {
        System.IO.Directory.CreateDirectory(Directory);
        foreach (var kept in spooled ?? [])
        {
            var target = ContentPathOf(stream.RunId, kept.Sha256);
            await using (var source = await kept.Open(CancellationToken.None))
            await using (var file = new FileStream(target + ".tmp", FileMode.Create, FileAccess.Write, FileShare.None, 64 * 1024, FileOptions.Asynchronous))
            {
                await source.CopyToAsync(file);
                file.Flush(flushToDisk: true);
            }
            File.Move(target + ".tmp", target, overwrite: true);
        }
        var serializer = _store.Options.Serializer();
        var entry = new JsonObject
        {
            ["runId"] = stream.RunId,
            ["user"] = stream.Context.User,
            ["correlationId"] = stream.Context.CorrelationId,
            ["causationId"] = stream.Context.CausationId,
            ["tenant"] = stream.Context.Tenant,
            ["events"] = new JsonArray(events.Select(e => (JsonNode)new JsonObject
            {
                ["type"] = EventCatalog.NameOf(e),
                ["data"] = JsonNode.Parse(serializer.ToJson(e)),
            }).ToArray()),
        };
        if (contents is { Count: > 0 })
            entry["contents"] = new JsonArray([.. contents.Select(c => (JsonNode)Convert.ToBase64String(c.Span))]);
        if (spooled is { Count: > 0 })
            entry["contentFiles"] = new JsonArray([.. spooled.Select(c => (JsonNode)new JsonObject { ["sha256"] = c.Sha256, ["bytes"] = c.Bytes })]);
        var path = part is null ? PathOf(stream.RunId) : Path.Combine(Directory, $"{stream.RunId:D}.{part}.json");
        var temporary = path + ".tmp";
        await using (var file = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None, 64 * 1024, FileOptions.Asynchronous))
        {
            await JsonSerializer.SerializeAsync(file, entry);
            file.Flush(flushToDisk: true);
        }
        File.Move(temporary, path, overwrite: true);
        DirectorySync.Flush(Directory);
        _wake.Release();
    }

    /// <summary>
    /// Start-up, before any write or commit here: deletes what a crash between the journal's writes and deletes left behind,
    /// which nothing would ever read (a *.tmp never renamed; an output's *.content that no run's .json names). The contents of
    /// a run whose .json cannot be read stay with it. Returns the files deleted.
    /// </summary>
    public int RemoveOrphans()
    {
        if (!System.IO.Directory.Exists(Directory))
            return 0;
        var named = new HashSet<string>(StringComparer.Ordinal);
        var unreadRuns = new HashSet<string>(StringComparer.Ordinal);
        foreach (var path in Files())
        {
            try
            {
                var entry = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
                var runId = entry["runId"]!.GetValue<Guid>();
                if (entry["contentFiles"] is JsonArray declared)
                    foreach (var content in declared)
                        named.Add(ContentPathOf(runId, content!["sha256"]!.GetValue<string>()));
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                unreadRuns.Add(Path.GetFileName(path).Split('.')[0]); // the commit pass deals with it; its contents are kept meanwhile
            }
        }
        var orphans = System.IO.Directory.GetFiles(Directory, "*.tmp")
            .Concat(ContentFiles().Where(f => !named.Contains(f) && !unreadRuns.Contains(Path.GetFileName(f).Split('.')[0])))
            .ToList();
        foreach (var orphan in orphans)
            File.Delete(orphan);
        if (orphans.Count > 0)
        {
            DirectorySync.Flush(Directory);
            LogOrphansRemoved(orphans.Count, Directory);
        }
        return orphans.Count;
    }

    /// <summary>
    /// One pass over the journal, each file tried once (start-up: what cannot be committed now stays, and its run is not abandoned).
    /// Returns the runs committed.
    /// </summary>
    public async Task<IReadOnlyList<Guid>> CommitAllOnceAsync(CancellationToken ct)
    {
        var committed = new List<Guid>();
        foreach (var path in Files())
        {
            try
            {
                if (await CommitAsync(path, ct) is { } runId)
                    committed.Add(runId);
            }
            catch (Exception e) when (Rejection(e) is { } rejection)
            {
                Rejected(path, rejection);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                LogCommitFailed(e, Path.GetFileName(path));
            }
        }
        return committed;
    }

    /// <summary>
    /// One pass in order: a file that fails for its data does not hold back the files after it. Throws (for the retry's
    /// backoff) when the store is away, or when a rejected file waits for its next attempt.
    /// </summary>
    private async Task CommitPassAsync(CancellationToken ct)
    {
        var retry = false;
        foreach (var path in Files())
        {
            try
            {
                await CommitAsync(path, ct);
            }
            catch (Exception e) when (Rejection(e) is { } rejection)
            {
                retry |= !Rejected(path, rejection);
            }
        }
        if (retry)
            throw new RejectedFileWaitsException();
    }

    /// <summary>Why a file's data cannot be committed: a SQLSTATE, or "file" when this version cannot read it as events.</summary>
    private sealed record FileRejection(string Code, string Reason);

    /// <summary>
    /// The server refused the file's data (StoreRefusals.IsPermanent: SQLSTATE class 22, 23 but a conflict, or 54), or this version cannot read it (an unknown event
    /// type, an envelope field missing): retrying it cannot help for long. Null for outages and conflicts.
    /// </summary>
    private static FileRejection? Rejection(Exception? e)
    {
        for (; e is not null; e = e.InnerException)
        {
            if (e is InvalidJournalFileException invalid)
                return new FileRejection(InvalidJournalFileException.Code, invalid.Message);
            if (Permanent(e) is { } p)
                return new FileRejection(p.SqlState, p.MessageText); // logged for the operator only
        }
        return null;
    }

    // The one rule (StoreRefusals.IsPermanent) for this worker and the run's outcome commit: a unique violation is a conflict, retried.
    private static Npgsql.PostgresException? Permanent(Exception e) =>
        e is Npgsql.PostgresException { IsTransient: false } p && StoreRefusals.IsPermanent(p.SqlState) ? p : null;

    /// <summary>
    /// The SQLSTATE when PostgreSQL refused the write for its data (the failures this worker sets aside for good): only those
    /// end a run failed instead of waiting here. Null for anything else (an outage, a read-only store, a timeout, a permission).
    /// </summary>
    public static string? PermanentRefusal(Exception? e)
    {
        for (; e is not null; e = e.InnerException)
            if (Permanent(e) is { } p)
                return p.SqlState;
        return null;
    }

    private sealed class InvalidJournalFileException(string reason, Exception? inner = null) : Exception(reason, inner)
    {
        public const string Code = "file";
    }

    /// <summary>Counts a rejection of the file; at the bound, sets the run's files aside (fsynced) and returns true.</summary>
    private bool Rejected(string path, FileRejection rejection)
    {
        var attempts = _rejections[path] = _rejections.GetValueOrDefault(path) + 1;
        if (attempts < RejectionsBeforeSetAside)
        {
            LogRejectedOnce(Path.GetFileName(path), attempts, rejection.Code, rejection.Reason);
            return false;
        }
        // The run's later parts go with it: committed alone they would describe a run whose outcome is not recorded.
        var run = Path.GetFileName(path).Split('.')[0];
        System.IO.Directory.CreateDirectory(RejectedDirectory);
        foreach (var file in Files().Concat(ContentFiles()).Where(f => Path.GetFileName(f).Split('.')[0] == run))
        {
            File.Move(file, Path.Combine(RejectedDirectory, Path.GetFileName(file)), overwrite: true);
            _rejections.Remove(file);
        }
        DirectorySync.Flush(RejectedDirectory);
        DirectorySync.Flush(Directory);
        LogSetAside(Path.GetFileName(path), attempts, rejection.Code, rejection.Reason, RejectedDirectory);
        _metrics?.JournalRejected(rejection.Code);
        return true;
    }

    private sealed class RejectedFileWaitsException() : Exception("A journal file that failed for its data waits for its next attempt.");

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await _wake.WaitAsync(TimeSpan.FromSeconds(5), stoppingToken);
                await _retry.ExecuteAsync(async token => await CommitPassAsync(token), stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception e)
            {
                LogCommitFailed(e, "journal");
            }
        }
    }

    /// <summary>
    /// Commits one journaled run and deletes its file. A commit that succeeded although its caller saw an error is not repeated:
    /// a stream that already ends in a terminal event is done, and events already in the stream are skipped.
    /// </summary>
    private async Task<Guid?> CommitAsync(string path, CancellationToken ct)
    {
        if (!File.Exists(path))
            return null;
        var name = Path.GetFileName(path);
        if (name.IndexOf('.') < name.Length - ".json".Length && File.Exists(Path.Combine(Directory, name[..name.IndexOf('.')] + ".json")))
            return null; // a later part waits for the run's first file
        JsonObject entry;
        try
        {
            await using var file = File.OpenRead(path);
            entry = await JsonNode.ParseAsync(file, cancellationToken: ct) as JsonObject
                ?? throw new InvalidJournalFileException("whole JSON that is not an object"); // not torn: set aside like any file of the wrong shape
        }
        catch (JsonException e)
        {
            // Torn by a crash before it was fsynced: the client was never answered from it; the run is abandoned at the next start.
            LogUnreadable(e, path);
            File.Move(path, path + ".unreadable", overwrite: true);
            return null;
        }

        var serializer = _store.Options.Serializer();
        JournalEntry journaled;
        WriteContext context;
        ReadOnlyMemory<byte>[] contents;
        (string Path, StoredContent Content)[] files;
        try
        {
            var named = entry["runId"]!.GetValue<Guid>();
            contents = entry["contents"] is JsonArray kept ? [.. kept.Select(c => (ReadOnlyMemory<byte>)Convert.FromBase64String(c!.GetValue<string>()))] : [];
            var journaledEvents = entry["events"]!.AsArray().Select(e =>
            {
                var type = e!["type"]!.GetValue<string>();
                var json = e["data"]!.ToJsonString();
                using var bytes = new MemoryStream(Encoding.UTF8.GetBytes(json));
                var data = serializer.FromJson(Types.TryGetValue(type, out var known) ? known : throw new InvalidJournalFileException($"unknown event type '{type}'"), bytes);
                return new JournalEvent(type, data, serializer.ToJson(data));
            }).ToList();
            context = new WriteContext(entry["user"]!.GetValue<string>(), entry["correlationId"]?.GetValue<string>(),
                entry["causationId"]?.GetValue<string>(), entry["tenant"]?.GetValue<string>());
            var declared = entry["contentFiles"] is JsonArray spooled ? spooled.Select(c => c!["sha256"]!.GetValue<string>()).ToList() : [];
            // The kept bytes are hashed here, those in files as they are read: the decision checks them against the digests the events name.
            List<string> hashes = [.. contents.Select(c => Sha256Hex.Of(c.Span))];
            files = new (string, StoredContent)[declared.Count];
            for (var i = 0; i < declared.Count; i++)
            {
                var file = ContentPathOf(named, declared[i]);
                await using var read = File.OpenRead(file);
                var actual = Convert.ToHexStringLower(await System.Security.Cryptography.SHA256.HashDataAsync(read, ct));
                if (actual != declared[i])
                    throw new InvalidJournalFileException($"a content file ({Path.GetFileName(file)}) that does not hash to the digest it is named by");
                hashes.Add(actual);
                files[i] = (file, new StoredContent(actual, read.Length));
            }
            journaled = new JournalEntry(named, context.Tenant, journaledEvents, hashes);
        }
        catch (Exception e) when (e is not InvalidJournalFileException and not OperationCanceledException)
        {
            // Whole JSON this version cannot read as a run's events (an envelope field missing, a value of the wrong type): no retry helps.
            throw new InvalidJournalFileException(e.Message, e);
        }
        var runId = journaled.RunId;
        IReadOnlyList<JournalEvent> recorded;
        await using (var session = _store.QuerySession())
            recorded = [.. (await session.Events.FetchStreamAsync(runId, token: ct)).Select(e => new JournalEvent(e.EventTypeName, e.Data, serializer.ToJson(e.Data)))];
        // Load, decide, act: what the file may add to the run is the Domain's decision.
        JournalVerdict verdict;
        try
        {
            verdict = JournalDecisions.Decide(journaled, recorded, _node, DateTimeOffset.UtcNow);
        }
        catch (Exception e) when (e is NullReferenceException or InvalidOperationException or ArgumentException)
        {
            // The decision is pure: it failing means events of a known type lacking facts it reads (an output without its digests).
            throw new InvalidJournalFileException($"events the decision cannot read: {e.Message}", e);
        }
        var (events, ends, ended) = verdict switch
        {
            JournalVerdict.Commit commit => commit,
            JournalVerdict.Refuse refuse => throw new InvalidJournalFileException(refuse.Reason),
            var other => throw new InvalidOperationException($"Unknown journal verdict {other}."),
        };
        if (events.Count > 0)
        {
            // Artifacts the events name were stored before the outcome was journaled (perhaps by a version that kept no hold):
            // held here at every attempt, so that the evidence sweep leaves them until the events commit.
            await _evidence.HoldStoredAsync(context.Tenant!, JournalDecisions.ReliedOn(journaled), new ContentHold(runId, _node), ct);
            // Outputs over one chunk (the store could not take them when the run ended) are streamed into it first: the events
            // that name them then commit with the rest; a content already there (or erased) is left as it is.
            foreach (var large in contents.Where(c => c.Length > EvidenceStore.ChunkSize))
                await _evidence.PutAsync(context.Tenant!, large, new ContentHold(runId, _node), ct);
            foreach (var (file, content) in files)
            {
                // Hashed again on the way in: a file changed since the decision's hash is refused, nothing stored.
                await using var read = File.OpenRead(file);
                try
                {
                    await _evidence.PutAsync(context.Tenant!, content, read, new ContentHold(runId, _node), ct);
                }
                catch (InvalidDataException e)
                {
                    throw new InvalidJournalFileException($"a content file that changed after it was checked: {e.Message}", e); // not an outage: no retry helps
                }
            }
            var stream = await RunStream.ResumeAsync(_store, runId, context, ct);
            await stream.AppendAsync(events, ct, session =>
            {
                // The contents the events name (already stored if a commit the caller saw fail went through: kept as they are).
                if (contents.Any(c => c.Length <= EvidenceStore.ChunkSize))
                    EvidenceStore.Stage(session, context.Tenant!, [.. contents.Where(c => c.Length <= EvidenceStore.ChunkSize)]);
                if (ends)
                    _queue.Finish(session, runId);
            });
            if (!ended)
                _feed.Recorded(runId, stream.Version - events.Count + 1, events); // a run already ended is no longer live
        }
        if (ended && _feed.Holds(runId))
        {
            // Ended elsewhere (abandoned by another node's sweeper): this node's subscribers get the recorded tail, whose
            // terminal event closes the run's live entry, instead of waiting on it forever.
            await _feed.CatchUpAsync(_store, runId, ct);
        }
        File.Delete(path);
        foreach (var (file, _) in files)
            File.Delete(file); // after the outcome's file: a crash in between leaves an unnamed content file, never a file naming a deleted one
        LogCommitted(runId, events.Count);
        return runId;
    }

    private IEnumerable<string> Files() =>
        System.IO.Directory.Exists(Directory) ? System.IO.Directory.GetFiles(Directory, "*.json").Order(StringComparer.Ordinal) : [];

    private string PathOf(Guid runId) => Path.Combine(Directory, runId.ToString("D") + ".json");

    // Named by run and digest only (a file cannot point the worker elsewhere): lower-case hex, checked before it becomes a path.
    private string ContentPathOf(Guid runId, string sha256) =>
        sha256.Length == 64 && sha256.All(Uri.IsHexDigit) && sha256 == sha256.ToLowerInvariant()
            ? Path.Combine(Directory, $"{runId:D}.{sha256}.content")
            : throw new InvalidJournalFileException($"a content file named by an invalid digest '{sha256}'");

    private IEnumerable<string> ContentFiles() =>
        System.IO.Directory.Exists(Directory) ? System.IO.Directory.GetFiles(Directory, "*.content") : [];

    [LoggerMessage(Level = LogLevel.Warning, Message = "Removed {Count} journal file(s) a crash left behind (unfinished *.tmp, or outputs no outcome names) from {Folder}")]
    private partial void LogOrphansRemoved(int count, string folder);

    [LoggerMessage(Level = LogLevel.Information, Message = "Run {RunId}: committed {Count} journaled events")]
    private partial void LogCommitted(Guid runId, int count);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Committing journaled outcome {File} failed; it stays in the journal")]
    private partial void LogCommitFailed(Exception e, string file);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The audit store still refuses journaled outcomes (attempt {Attempt}); retrying")]
    private partial void LogStillWaiting(Exception? e, int attempt);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Journal file {File} could not be committed for its data (attempt {Attempt}): {Code} {Reason}; the files after it go on")]
    private partial void LogRejectedOnce(string file, int attempt, string code, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Journal file {File} could not be committed for its data {Attempts} times ({Code} {Reason}; \"file\" when this version "
        + "cannot read it as events, else PostgreSQL's SQLSTATE): set aside, never committed, in {Folder}; the run is recorded abandoned once "
        + "its lease lapses. Inspect the file; it is kept for the operator")]
    private partial void LogSetAside(string file, int attempts, string code, string reason, string folder);

    [LoggerMessage(Level = LogLevel.Error, Message = "Journal file {Path} is unreadable; set aside")]
    private partial void LogUnreadable(Exception e, string path);
}
