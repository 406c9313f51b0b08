namespace Sandbox.Audited.Domain.Hashing;

/// <summary>
/// One stored event as the verifier sees it: exactly what is in the table, nothing deserialized. The data is
/// its JSON text, either as a string or (when <see cref="DataUtf8"/> is set, as the database reader does) as UTF-8.
/// <see cref="Canon"/> is its "canon" header: the canonical form it was hashed in (null: the legacy form, see <see cref="EventChain"/>).
/// </summary>
public readonly record struct StoredEvent(
    Guid StreamId, long Version, long Sequence, string Type, string Data, string? Hash, string? PrevHash, long? StreamVersion)
{
    public ReadOnlyMemory<byte> DataUtf8 { get; init; }

    public string? Canon { get; init; }
}

/// <summary>Where a stream's chain first breaks, and why.</summary>
public sealed record ChainBreak(Guid StreamId, long Version, long? Sequence, string Reason);

/// <summary>
/// Recomputes a stream's hash chain from stored rows, fed in (stream id, version) order and each stream
/// from its first event, each in the canonical form its header names. Reports the first broken link of every damaged stream:
/// a gap in the versions (an event removed), a stored prevHash that is not the previous event's stored hash
/// (events swapped, reordered or removed), a recomputed hash that differs from the stored one (content
/// changed), a missing hash, or a stream whose recorded version is beyond its last event (events removed at
/// the end). A stream without a terminal event is not a chain error: runs may still be in flight.
/// </summary>
public sealed class ChainVerifier(int maxBreaks = 100)
{
    private readonly ChainHasher _hasher = new();
    private readonly List<ChainBreak> _breaks = [];
    private Guid _stream;
    private bool _inStream;
    private bool _streamBroken;
    private long _lastVersion;
    private long? _streamVersion;
    private string _lastHash = EventChain.Genesis;

    public long EventsChecked { get; private set; }

    public long StreamsChecked { get; private set; }

    /// <summary>How many streams are broken (all of them, even beyond the reported maximum).</summary>
    public long BrokenStreams { get; private set; }

    public IReadOnlyList<ChainBreak> Breaks => _breaks;

    public bool Verified => BrokenStreams == 0;

    public void Add(in StoredEvent e)
    {
        if (!_inStream || e.StreamId != _stream)
        {
            EndStream();
            _stream = e.StreamId;
            _inStream = true;
            _streamBroken = false;
            _lastVersion = 0;
            _lastHash = EventChain.Genesis;
            _streamVersion = e.StreamVersion;
            StreamsChecked++;
        }
        EventsChecked++;
        if (_streamBroken)
            return;

        // A repeated version can only come from a copy (an export with a line inserted); the database refuses one.
        var reason = e.Version <= _lastVersion
            ? $"version {e.Version} appears again after version {_lastVersion} (an event inserted or duplicated)"
            : Check(e);
        if (reason is not null)
            Break(new ChainBreak(e.StreamId, e.Version, e.Sequence, reason));
        _lastVersion = e.Version;
        _lastHash = e.Hash ?? "";
    }

    /// <summary>
    /// Starts a stream after an event verified before and committed in a checkpoint's tree (the caller compared its
    /// leaf): the chain continues from that event's stored hash instead of from the genesis value. When the leaf did not
    /// match (<paramref name="committed"/> false), the stream is broken there.
    /// </summary>
    public void ResumeAfter(Guid streamId, long version, long sequence, string hash, long? streamVersion, bool committed)
    {
        EndStream();
        _stream = streamId;
        _inStream = true;
        _streamBroken = false;
        _lastVersion = version;
        _lastHash = hash;
        _streamVersion = streamVersion;
        StreamsChecked++;
        if (!committed)
            Break(new ChainBreak(streamId, version, sequence,
                "the last event before the checkpoint is not the one the checkpoint's tree committed (changed or removed)"));
    }

    /// <summary>Call after the last row: checks the tail of the last stream.</summary>
    public void Complete() => EndStream();

    private string? Check(in StoredEvent e)
    {
        var expected = _lastVersion + 1;
        if (e.Version != expected)
            return e.Version > expected
                ? (expected == e.Version - 1 ? $"version {expected} is missing" : $"versions {expected}..{e.Version - 1} are missing")
                  + $" (event removed; found version {e.Version} after {_lastVersion})"
                : $"unexpected version {e.Version} after {_lastVersion}";
        if (string.IsNullOrEmpty(e.Hash))
            return "the event carries no hash";
        if (e.PrevHash != _lastHash)
            return _lastVersion == 0
                ? "the first event's prevHash is not the genesis value (events before it were removed or reordered)"
                : $"prevHash does not match the hash of version {_lastVersion} (events swapped, reordered or removed)";
        if (!EventChain.IsKnownCanon(e.Canon))
            return $"unknown canonical form \"{e.Canon}\" (written by a newer version?)";
        string actual;
        try
        {
            actual = e.DataUtf8.IsEmpty
                ? _hasher.Hash(_lastHash, e.StreamId, e.Version, e.Type, e.Data, e.Canon)
                : _hasher.Hash(_lastHash, e.StreamId, e.Version, e.Type, e.DataUtf8.Span, e.Canon);
        }
        catch (System.Text.Json.JsonException ex)
        {
            return $"the stored data cannot be canonicalized: {ex.Message}";
        }
        return actual == e.Hash
            ? null
            : "hash mismatch: the stored type or data differ from what was hashed (content changed)";
    }

    private void EndStream()
    {
        if (_inStream && !_streamBroken && _streamVersion is { } recorded && recorded > _lastVersion)
            Break(new ChainBreak(_stream, _lastVersion + 1, null,
                $"the stream records version {recorded} but its last event is version {_lastVersion} (events removed at the end)"));
        _inStream = false;
    }

    private void Break(ChainBreak link)
    {
        _streamBroken = true;
        BrokenStreams++;
        if (_breaks.Count < maxBreaks)
            _breaks.Add(link);
    }
}
