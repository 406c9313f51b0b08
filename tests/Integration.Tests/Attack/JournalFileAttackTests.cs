using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Npgsql;
using Sandbox.Audited.Api.Runs;
using Sandbox.Audited.Api.Streaming;
using Sandbox.Audited.Audit.Queue;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Executor;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Attack;

/// <summary>
/// An attacker's tests of the outcome journal's promise that a file this version cannot read as a run's events is set aside
/// and does not hold back the files after it: whole JSON of the wrong shape (a damaged disk, a hand edit) included.
/// </summary>
[Collection(Infrastructure.ServiceCollection.Name)]
public sealed class JournalFileAttackTests(ServiceFixture fixture)
{
    [Theory]
    [InlineData("[]")]
    [InlineData("null")]
    [InlineData("""{"runId":"RUN","user":"ada","tenant":"tenant-journal-shape","events":[{"type":"output_recorded","data":{}}]}""")]
    [InlineData("""{"runId":"RUN","user":"ada","tenant":"tenant-journal-shape","events":[null]}""")]
    public async Task AJournalFileOfTheWrongShapeIsSetAsideAndTheFilesAfterItAreCommitted(string content)
    {
        var directory = Path.Combine(Path.GetTempPath(), "sbx-test-journal-" + Guid.NewGuid().ToString("N")[..8]);
        var node = "shape-" + Guid.NewGuid().ToString("N")[..6];
        var journal = new OutcomeJournal(fixture.Services.GetRequiredService<IDocumentStore>(),
            fixture.Services.GetRequiredService<Sandbox.Audited.Audit.Evidence.EvidenceStore>(), fixture.Services.GetRequiredService<RunFeed>(),
            fixture.Services.GetRequiredService<RunQueue>(), Options.Create(new ExecutorOptions { NodeId = node, JournalDirectory = directory }),
            NullLogger<OutcomeJournal>.Instance);
        // Files are committed in the order of their names (run ids, time-ordered): the damaged one comes first.
        var damaged = await RecordedAsync();
        var good = await RecordedAsync();
        await journal.KeepAsync(new RunStream(fixture.Services.GetRequiredService<IDocumentStore>(), good, new WriteContext("ada", null, Tenant: "tenant-journal-shape")),
            [new RunCompleted(good, RunStatus.Succeeded, 0, 12, null, DateTimeOffset.UtcNow)]);
        await File.WriteAllTextAsync(Path.Combine(journal.Directory, $"{damaged:D}.json"), content.Replace("RUN", damaged.ToString("D"), StringComparison.Ordinal));

        await journal.StartAsync(CancellationToken.None);
        try
        {
            await Eventually.WaitUntilAsync(async () => (await TypesAsync(good)).Contains("run_completed"),
                () => "the journal file after the damaged one was never committed", TimeSpan.FromSeconds(30));
            await Eventually.WaitUntilAsync(() => Task.FromResult(File.Exists(Path.Combine(journal.RejectedDirectory, $"{damaged:D}.json"))),
                () => "the damaged file was not set aside", TimeSpan.FromSeconds(30));
        }
        finally
        {
            await journal.StopAsync(CancellationToken.None);
            Directory.Delete(directory, recursive: true);
        }
        Assert.Equal(["run_requested", "policy_evaluated", "run_queued"], await TypesAsync(damaged));
    }

    private async Task<Guid> RecordedAsync()
    {
        var runId = Guid.CreateVersion7();
        var caller = new Caller("ada", "tenant-journal-shape", ["runner"]);
        var now = DateTimeOffset.UtcNow;
        var stream = new RunStream(fixture.Services.GetRequiredService<IDocumentStore>(), runId, new WriteContext("ada", null, Tenant: caller.Tenant));
        await stream.AppendAsync(
        [
            new RunRequested(runId, caller, "python", null, new string('0', 64), 0, new string('0', 64), 0, [], [], RequestedLimits.None, "internal",
                new ClientInfo("127.0.0.1", "test", null, null), "elsewhere", now, InputsStored: true),
            new PolicyEvaluated(runId, Decision.Allow, "test", [], new RunLimits(1000, 64, 1, 16, 1024, 16), [], [], now),
            new RunQueued(runId, "elsewhere", null, now),
        ], CancellationToken.None);
        return runId;
    }

    private async Task<List<string>> TypesAsync(Guid runId)
    {
        await using var connection = new NpgsqlConnection(fixture.Database.AdminConnection);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT type FROM sandbox.mt_events WHERE stream_id = $1 ORDER BY version", connection);
        command.Parameters.AddWithValue(runId);
        var types = new List<string>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
            types.Add(reader.GetString(0));
        return types;
    }
}
