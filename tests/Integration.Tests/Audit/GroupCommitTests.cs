using Marten;
using Npgsql;
using Sandbox.Audited.Audit;
using Sandbox.Audited.Audit.Queue;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Audit;

/// <summary>Appends of different runs made at the same moment share a commit; each writer still gets its own outcome. Real PostgreSQL.</summary>
public sealed class GroupCommitTests
{
    private static readonly DateTimeOffset Now = DateTimeOffset.UtcNow;

    [Fact]
    public async Task AMemberTheServerRefusesFailsAloneAndTheOthersOfItsGroupCommit()
    {
        await using var database = new TestDatabase();
        await database.CreateAsync();
        using var store = DocumentStore.For(o => MartenSetup.Configure(o, database.AppConnection));
        await using var source = NpgsqlDataSource.Create(database.AppConnection);
        var queue = new RunQueue(source);
        var busy = OccupyAsync(store, TimeSpan.FromMilliseconds(500));
        var runs = Enumerable.Range(0, 4).Select(_ => Guid.CreateVersion7()).ToList();
        const int fastPath = 2;

        // Four write-ahead commits while the group's commits are in flight: they leave together. The third is taken at once by an
        // embedded node whose tenant has no room left (ceiling 0), which sbx_room_on_enqueue refuses with SBX01.
        var commits = runs.Select((runId, i) => Stream(store, runId, "ada").AppendAsync([RunDecisions.Queued(runId, "api", i == fastPath ? "exec" : null, Now)],
            CancellationToken.None, session => queue.Enqueue(session, Work(runId), "tenant-a", "api", i == fastPath ? "exec" : null, 30, maxPerTenant: 0))).ToList();
        await busy;

        var refused = await Assert.ThrowsAnyAsync<Exception>(() => commits[fastPath]);
        Assert.True(RunQueue.IsTenantAtCeiling(refused), refused.ToString());
        await Task.WhenAll(commits.Where((_, i) => i != fastPath));
        Assert.Equal(1, GroupCommit.For(store).Retried);
        for (var i = 0; i < runs.Count; i++)
        {
            Assert.Equal(i == fastPath ? 0 : 1, await database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events WHERE stream_id = $1", runs[i]));
            Assert.Equal(i == fastPath ? null : "queued", await database.ScalarAsync<string>("SELECT state FROM sandbox.run_queue WHERE run_id = $1", runs[i]));
        }
    }

    [Fact]
    public async Task ACommitRefusedInTheUseThatPreparesAStatementLeavesThePreparedConnectionUsable()
    {
        // One connection, statements prepared on first use. A statement that the server refuses while binding it (here an
        // invalid uuid, found as the plan is made) in the round trip that prepares it is kept by Npgsql 10.0.3 as prepared
        // without its row description: its next execution on that connection broke it ("unexpected backend message
        // DataRow"). The connection forgets its prepared statements after a failed commit, so the next commits go through.
        await using var database = new TestDatabase();
        await database.CreateAsync();
        using var store = DocumentStore.For(o => MartenSetup.Configure(o, database.AppConnection));
        var prepared = new NpgsqlConnectionStringBuilder(Prepared.ConnectionString(database.AppConnection)) { MaxPoolSize = 1, AutoPrepareMinUsages = 1 };
        await using var connections = NpgsqlDataSource.Create(prepared.ConnectionString);
        GroupCommit.For(store).Connections = connections;
        const string Lookup = "SELECT count(*) FROM sandbox.run_queue WHERE run_id = ?::uuid";

        var refusedRun = Guid.CreateVersion7();
        var refused = await Assert.ThrowsAnyAsync<Exception>(() => Stream(store, refusedRun, "ada").AppendAsync(
            [RunDecisions.Queued(refusedRun, "api", null, Now)], CancellationToken.None, session => session.QueueSqlCommand(Lookup, "not-a-uuid")));
        Assert.Equal(PostgresErrorCodes.InvalidTextRepresentation, Assert.IsType<PostgresException>(refused.InnerException ?? refused).SqlState);

        var runs = Enumerable.Range(0, 3).Select(_ => Guid.CreateVersion7()).ToList();
        foreach (var runId in runs)
            await Stream(store, runId, "ada").AppendAsync([RunDecisions.Queued(runId, "api", null, Now)], CancellationToken.None,
                session => session.QueueSqlCommand(Lookup, runId.ToString()));
        var resumed = await RunStream.ResumeAsync(store, runs[0], new WriteContext("ada", null, Tenant: "tenant-a"), CancellationToken.None);
        await resumed.AppendAsync([new RunCompleted(runs[0], RunStatus.Succeeded, 0, 1, null, Now)], CancellationToken.None);

        Assert.Equal(0, await database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events WHERE stream_id = $1", refusedRun));
        Assert.Equal(4, await database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events WHERE stream_id = ANY($1)", runs.ToArray()));
    }

    [Fact]
    public async Task MembersOfASharedCommitKeepTheirOwnWhoWhyAndChain()
    {
        await using var database = new TestDatabase();
        await database.CreateAsync();
        using var store = DocumentStore.For(o => MartenSetup.Configure(o, database.AppConnection));
        var group = GroupCommit.For(store);
        var runs = Enumerable.Range(0, 3).Select(_ => Guid.CreateVersion7()).ToList();
        var streams = runs.Select((runId, i) => Stream(store, runId, "user-" + i)).ToList();
        // Each run's first commit alone, so that the shared one appends at an expected version and extends each chain.
        foreach (var (stream, runId) in streams.Zip(runs))
            await stream.AppendAsync([RunDecisions.Queued(runId, "api", null, Now)], CancellationToken.None);
        var busy = OccupyAsync(store, TimeSpan.FromMilliseconds(300));
        var (shared, members) = (group.Shared, group.SharedMembers);

        var commits = streams.Zip(runs).Select(s => s.First.AppendAsync([new RunCompleted(s.Second, RunStatus.Succeeded, 0, 1, null, Now)], CancellationToken.None)).ToList();
        await busy;
        await Task.WhenAll(commits);

        Assert.Equal((shared + 1, members + 3), (group.Shared, group.SharedMembers));
        for (var i = 0; i < runs.Count; i++)
        {
            Assert.Equal($"user-{i}|corr-user-{i}", await database.ScalarAsync<string>(
                "SELECT string_agg(DISTINCT user_name || '|' || correlation_id, ',') FROM sandbox.mt_events WHERE stream_id = $1", runs[i]));
            // The shared commit's event follows the run's own first one in its chain, at version 2.
            Assert.Equal(1, await database.ScalarAsync<long>("""
                SELECT count(*) FROM sandbox.mt_events e JOIN sandbox.mt_events f ON f.stream_id = e.stream_id AND f.version = 1
                WHERE e.stream_id = $1 AND e.version = 2 AND e.type = 'run_completed' AND e.headers ->> 'prevHash' = f.headers ->> 'hash'
                """, runs[i]));
        }
    }

    [Fact]
    public async Task ASharedCommitWhoseBackendDiesMidwayLeavesNothingHalfWrittenAndItsMembersCommitOnceEach()
    {
        await using var database = new TestDatabase();
        await database.CreateAsync();
        using var store = DocumentStore.For(o => MartenSetup.Configure(o, database.AppConnection));
        await using var source = NpgsqlDataSource.Create(database.AppConnection);
        var queue = new RunQueue(source);
        var busy = OccupyAsync(store, TimeSpan.FromMilliseconds(400));
        var runs = Enumerable.Range(0, 3).Select(_ => Guid.CreateVersion7()).ToList();

        // The second member keeps the shared transaction open long enough for its backend to be terminated (as a PostgreSQL
        // crash or restart ends it) after the first member's writes were sent.
        var commits = runs.Select((runId, i) => Stream(store, runId, "ada").AppendAsync([RunDecisions.Queued(runId, "api", null, Now)], CancellationToken.None,
            session =>
            {
                queue.Enqueue(session, Work(runId), "tenant-a", "api", null, 30);
                if (i == 1)
                    session.QueueSqlCommand("SELECT pg_sleep(0.61)");
            })).ToList();
        await busy;
        await Eventually.WaitUntilAsync(async () => await database.ScalarAsync<bool>(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(0.61)%' AND pid <> pg_backend_pid() AND datname = current_database()"),
            () => "the shared commit never reached its second member", TimeSpan.FromSeconds(5));
        await Task.WhenAll(commits);

        Assert.Equal(1, GroupCommit.For(store).Retried);
        foreach (var runId in runs)
        {
            Assert.Equal(1, await database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events WHERE stream_id = $1", runId));
            Assert.Equal(1, await database.ScalarAsync<long>("SELECT count(*) FROM sandbox.run_queue WHERE run_id = $1", runId));
        }
    }

    /// <summary>Holds every commit slot of the group for a while, so that appends made meanwhile leave together after it.</summary>
    private static Task OccupyAsync(IDocumentStore store, TimeSpan hold) => Task.WhenAll(Enumerable.Range(0, GroupCommit.For(store).InFlight).Select(_ =>
    {
        var runId = Guid.CreateVersion7();
        return Stream(store, runId, "holder").AppendAsync([RunDecisions.Queued(runId, "api", null, Now)], CancellationToken.None,
            session => session.QueueSqlCommand($"SELECT pg_sleep({hold.TotalSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture)})"));
    }));

    private static RunStream Stream(IDocumentStore store, Guid runId, string user) =>
        new(store, runId, new WriteContext(user, "corr-" + user, Tenant: "tenant-a"));

    private static RunWork Work(Guid runId) => new(runId,
        new QueuedRequest("python", new string('0', 64), 0, new string('0', 64), 0, [], [], RequestedLimits.None, "internal", "python", "standard"),
        new PolicyDecision(Decision.Allow, "test", [], new RunLimits(1000, 64, 1, 16, 1024, 16), [], []), new Caller("ada", "tenant-a", ["runner"]), null, null);
}
