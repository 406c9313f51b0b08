using Sandbox.Audited.Domain.Hashing;

namespace Sandbox.Audited.Domain.Tests.Hashing;

public sealed class ChainVerifierTests
{
    private static readonly Guid Run = Guid.Parse("6f1d1c3e-59a4-4b39-8f7e-0d5e8f0a1b2c");

    private static List<StoredEvent> Chain(Guid stream, int count, long firstSequence = 1)
    {
        var events = new List<StoredEvent>();
        var previous = EventChain.Genesis;
        for (var v = 1; v <= count; v++)
        {
            var data = $$"""{"runId":"{{stream}}","n":{{v}},"at":"2025-01-01T00:00:0{{v % 10}}Z","text":"é \"quoted\"\n"}""";
            var hash = EventChain.Hash(previous, stream, v, "evt_" + v, data);
            events.Add(new StoredEvent(stream, v, firstSequence + v - 1, "evt_" + v, data, hash, previous, count) { Canon = EventChain.CurrentCanon });
            previous = hash;
        }
        return events;
    }

    private static ChainVerifier Verify(IEnumerable<StoredEvent> events)
    {
        var verifier = new ChainVerifier();
        foreach (var e in events) verifier.Add(e);
        verifier.Complete();
        return verifier;
    }

    [Fact]
    public void AnIntactChainVerifies()
    {
        var other = Guid.NewGuid();
        var verifier = Verify(Chain(Run, 5).Concat(Chain(other, 3, 10)).OrderBy(e => e.StreamId).ThenBy(e => e.Version));

        Assert.True(verifier.Verified);
        Assert.Equal(8, verifier.EventsChecked);
        Assert.Equal(2, verifier.StreamsChecked);
    }

    [Fact]
    public void TheFastHasherProducesTheDocumentedHash()
    {
        var data = """{"b":1.5,"a":[true,null,"x\u0001"],"c":{"z":10,"y":1e3}}""";
        var expected = Sha256Hex.Of(EventChain.Genesis
            + "{\"data\":{\"a\":[true,null,\"x\\u0001\"],\"b\":1.5,\"c\":{\"y\":1000,\"z\":10}},\"streamId\":\"" + Run + "\",\"type\":\"t\",\"version\":7}");

        Assert.Equal(expected, EventChain.Hash(EventChain.Genesis, Run, 7, "t", data));
        Assert.Equal(expected, new ChainHasher().Hash(EventChain.Genesis, Run, 7, "t", data, "jcs"));
        Assert.Equal(expected, EventChain.LegacyHash(EventChain.Genesis, Run, 7, "t", data));
        Assert.Equal(expected, new ChainHasher().Hash(EventChain.Genesis, Run, 7, "t", data, null));
    }

    [Fact]
    public void NewEventsAreHashedInRfc8785AndOldOnesInTheLegacyForm()
    {
        var data = """{"x":1e-300,"y":1e21,"z":9007199254740993}""";
        var jcs = Sha256Hex.Of(EventChain.Genesis
            + "{\"data\":{\"x\":1e-300,\"y\":1e+21,\"z\":9007199254740992},\"streamId\":\"" + Run + "\",\"type\":\"t\",\"version\":1}");
        var legacy = Sha256Hex.Of(EventChain.Genesis
            + "{\"data\":{\"x\":1E-300,\"y\":1E+21,\"z\":9007199254740993},\"streamId\":\"" + Run + "\",\"type\":\"t\",\"version\":1}");

        Assert.Equal(jcs, EventChain.Hash(EventChain.Genesis, Run, 1, "t", data));
        Assert.Equal(legacy, EventChain.LegacyHash(EventChain.Genesis, Run, 1, "t", data));
        Assert.Equal(jcs, Sha256Hex.Of(EventChain.Genesis + EventChain.CanonicalForm(Run, 1, "t", data)));
    }

    [Fact]
    public void AStreamRecordedBeforeRfc8785KeepsVerifyingWhenItContinuesInTheNewForm()
    {
        // Old events carry no canon header and were hashed in the legacy form; the stream then goes on with canon "jcs".
        var events = new List<StoredEvent>();
        var previous = EventChain.Genesis;
        for (var v = 1; v <= 4; v++)
        {
            var data = $$"""{"n":{{v}},"small":1e-7,"big":1e21}""";
            var legacy = v <= 2;
            var hash = legacy ? EventChain.LegacyHash(previous, Run, v, "t", data) : EventChain.Hash(previous, Run, v, "t", data);
            events.Add(new StoredEvent(Run, v, v, "t", data, hash, previous, 4) { Canon = legacy ? null : "jcs" });
            previous = hash;
        }

        Assert.True(Verify(events).Verified);
        Assert.NotEqual(events[0].Hash, EventChain.Hash(EventChain.Genesis, Run, 1, "t", events[0].Data));

        // The header picks the form: claiming the other one fails (the numbers are written differently).
        var relabelled = events.ToList();
        relabelled[0] = relabelled[0] with { Canon = "jcs" };
        Assert.Contains("hash mismatch", Assert.Single(Verify(relabelled).Breaks).Reason);
        relabelled = events.ToList();
        relabelled[3] = relabelled[3] with { Canon = null };
        Assert.Equal(4, Assert.Single(Verify(relabelled).Breaks).Version);
    }

    [Fact]
    public void AnUnknownCanonicalFormIsABreakNotAGuess()
    {
        var events = Chain(Run, 2);
        events[1] = events[1] with { Canon = "jcs2" };

        Assert.Contains("unknown canonical form", Assert.Single(Verify(events).Breaks).Reason);
    }

    [Fact]
    public void ARepeatedVersionIsABreak()
    {
        var events = Chain(Run, 3);
        events.Insert(2, events[1]);

        var broken = Assert.Single(Verify(events).Breaks);

        Assert.Equal(2, broken.Version);
        Assert.Contains("appears again", broken.Reason);
    }

    [Fact]
    public void ChangedDataIsAHashMismatchAtThatVersion()
    {
        var events = Chain(Run, 5);
        events[2] = events[2] with { Data = events[2].Data.Replace("\"n\":3", "\"n\":33") };

        var broken = Assert.Single(Verify(events).Breaks);

        Assert.Equal((Run, 3L, 3L), (broken.StreamId, broken.Version, broken.Sequence!.Value));
        Assert.Contains("hash mismatch", broken.Reason);
    }

    [Fact]
    public void KeyOrderAndWhitespaceDoNotMatter()
    {
        var events = Chain(Run, 2);
        events[0] = events[0] with { Data = """{ "text": "é \"quoted\"\n", "at": "2025-01-01T00:00:01Z", "n": 1.0, "runId": "RUN" }""".Replace("RUN", Run.ToString()) };

        Assert.True(Verify(events).Verified);
    }

    [Fact]
    public void AMissingMiddleEventIsAGap()
    {
        var events = Chain(Run, 5);
        events.RemoveAt(2);

        var broken = Assert.Single(Verify(events).Breaks);

        Assert.Equal(4, broken.Version);
        Assert.Contains("version 3 is missing", broken.Reason);
    }

    [Fact]
    public void SwappedEventsBreakTheLink()
    {
        var events = Chain(Run, 5);
        (events[1], events[2]) = (events[2] with { Version = 2 }, events[1] with { Version = 3 });

        var broken = Assert.Single(Verify(events).Breaks);

        Assert.Equal(2, broken.Version);
        Assert.Contains("prevHash does not match", broken.Reason);
    }

    [Fact]
    public void ARemovedTailIsCaughtByTheStreamVersion()
    {
        var events = Chain(Run, 5);
        events.RemoveAt(4);

        var broken = Assert.Single(Verify(events).Breaks);

        Assert.Equal(5, broken.Version);
        Assert.Contains("events removed at the end", broken.Reason);
    }

    [Fact]
    public void AStreamWithoutATerminalEventIsNotBroken()
    {
        var events = Chain(Run, 2).Select(e => e with { StreamVersion = 2 });

        Assert.True(Verify(events).Verified);
    }

    [Fact]
    public void OnlyTheFirstBreakOfAStreamIsReported()
    {
        var other = Guid.NewGuid();
        var events = Chain(Run, 5);
        events[1] = events[1] with { Data = "{}" };
        events[3] = events[3] with { Hash = null };
        var all = events.Concat(Chain(other, 2, 10)).OrderBy(e => e.StreamId).ThenBy(e => e.Version).ToList();

        var verifier = Verify(all);

        Assert.Equal(1, verifier.BrokenStreams);
        Assert.Equal(2, Assert.Single(verifier.Breaks).Version);
        Assert.Equal(7, verifier.EventsChecked);
    }

    [Fact]
    public void AStreamResumedAfterACommittedEventChecksOnlyTheNewerEvents()
    {
        var events = Chain(Run, 8);
        var verifier = new ChainVerifier();
        verifier.ResumeAfter(Run, 5, 5, events[4].Hash!, 8, committed: true);
        foreach (var e in events.Skip(5)) verifier.Add(e);
        verifier.Complete();

        Assert.True(verifier.Verified);
        Assert.Equal(3, verifier.EventsChecked);
        Assert.Equal(1, verifier.StreamsChecked);
    }

    [Fact]
    public void AResumedStreamIsBrokenByAChangedNewEventOrAnAnchorNotCommitted()
    {
        var events = Chain(Run, 8);
        var changed = events.Skip(5).ToList();
        changed[1] = changed[1] with { Data = changed[1].Data.Replace("\"n\":7", "\"n\":70", StringComparison.Ordinal) };
        var verifier = new ChainVerifier();
        verifier.ResumeAfter(Run, 5, 5, events[4].Hash!, 8, committed: true);
        foreach (var e in changed) verifier.Add(e);
        verifier.Complete();
        Assert.False(verifier.Verified);
        Assert.Equal(7, verifier.Breaks[0].Version);

        var uncommitted = new ChainVerifier();
        uncommitted.ResumeAfter(Run, 5, 5, events[4].Hash!, 8, committed: false);
        foreach (var e in events.Skip(5)) uncommitted.Add(e);
        uncommitted.Complete();
        Assert.False(uncommitted.Verified);
        Assert.Contains("checkpoint's tree committed", uncommitted.Breaks[0].Reason);
    }
}
