using System.Net;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Executor;
using Sandbox.Audited.Tests.Faults;
using Sandbox.Audited.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Sandbox.Audited.Tests.Attack;

/// <summary>
/// Attack on the graceful stop (SIGTERM) where the earlier tests did not go: during POST /v1/runs/{id}/reproduce, and while
/// PostgreSQL is away with a run in flight. The run in flight must finish, be answered truly and end once in the record.
/// </summary>
public sealed class ShutdownAttackTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly TestDatabase _database = new();
    private readonly string _keyPath = Path.Combine(Path.GetTempPath(), "sbx-stop-key-" + Guid.NewGuid().ToString("N")[..8] + ".json");
    private readonly string _journal = Path.Combine(Path.GetTempPath(), "sbx-stop-journal-" + Guid.NewGuid().ToString("N")[..8]);
    private readonly string _nodeId = "stop-" + Guid.NewGuid().ToString("N")[..8];
    private readonly DateTimeOffset _since = DateTimeOffset.UtcNow.AddSeconds(-1);
    private ServiceProcess.Setup _setup = null!;

    public async Task InitializeAsync()
    {
        await _database.CreateAsync();
        DevelopmentKeys.Create(_keyPath);
        _setup = new ServiceProcess.Setup(_database, _keyPath, _nodeId);
    }

    public async Task DisposeAsync()
    {
        await Containers.RemoveAllOfNodeAsync(_nodeId);
        await _database.DisposeAsync();
        File.Delete(_keyPath);
        if (Directory.Exists(_journal))
            Directory.Delete(_journal, recursive: true);
    }

    private Task<ServiceProcess> StartAsync() => ServiceProcess.StartAsync(_setup, new Dictionary<string, string>
    {
        ["Executor__JournalDirectory"] = _journal,
    }, startTimeout: TimeSpan.FromSeconds(120));

    [Fact]
    public async Task SigtermDuringAReproductionLetsItFinishAndAnswerItsComparison()
    {
        const string tenant = "tenant-stop-repro";
        await using var service = await StartAsync();
        using var runner = service.Client(_setup.Token("alice", tenant, Roles.Runner));
        runner.Timeout = TimeSpan.FromMinutes(2);
        var (first, original) = await runner.RunAsync(new { language = "shell", code = "sleep 3; echo same" });
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        var originalId = original.Str("runId");

        var reproducing = runner.PostAsync($"/v1/runs/{originalId}/reproduce", null);
        await Eventually.WaitUntilAsync(async () => await _database.ScalarAsync<long>("""
            SELECT count(*) FROM sandbox.mt_events r WHERE r.type = 'run_requested' AND r.data ->> 'reproducesRunId' = $1
              AND EXISTS (SELECT 1 FROM sandbox.mt_events s WHERE s.stream_id = r.stream_id AND s.type = 'sandbox_started')
            """, originalId) == 1, () => "the reproduction never started its sandbox", TimeSpan.FromSeconds(30), pollMs: 20);
        service.Terminate();

        var answer = await reproducing;
        var body = await answer.Content.ReadAsStringAsync();
        output.WriteLine($"reproduce across SIGTERM: {(int)answer.StatusCode} {body}");
        Assert.True(await service.WaitForExitAsync(TimeSpan.FromSeconds(60)), "the service did not stop");
        output.WriteLine($"exit code {service.ExitCode}");
        Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        Assert.Contains("\"identical\":true", body, StringComparison.Ordinal);
        Assert.Equal(0, service.ExitCode);
        var violations = await FaultInvariants.CheckAsync(_database, _nodeId, _since, [tenant]);
        Assert.True(violations.Count == 0, string.Join("\n", violations));
    }

    [Fact]
    public async Task SigtermWhilePostgresIsAwayKeepsTheRunInFlightAndTheNextStartCommitsItOnce()
    {
        const string tenant = "tenant-stop-away";
        var service = await StartAsync();
        Guid runId;
        try
        {
            using var runner = service.Client(_setup.Token("bob", tenant, Roles.Runner));
            runner.Timeout = TimeSpan.FromMinutes(2);
            var running = runner.RunAsync(new { language = "shell", code = "sleep 3; echo kept" });
            Guid? started = null;
            await Eventually.WaitUntilAsync(async () => (started = await _database.ScalarAsync<Guid?>("""
                SELECT s.stream_id FROM sandbox.mt_events s WHERE s.type = 'sandbox_started' LIMIT 1
                """)) is not null, () => "the run never started its sandbox", TimeSpan.FromSeconds(30), pollMs: 20);
            runId = started!.Value;

            await using (await _database.AwayForServiceAsync())
            {
                service.Terminate();
                var (answer, body) = await running;
                output.WriteLine($"run across SIGTERM with PostgreSQL away: {(int)answer.StatusCode} {body.ToJsonString()}");
                Assert.Equal(runId, Guid.Parse(body.Str("runId")));
                Assert.Equal(HttpStatusCode.Accepted, answer.StatusCode);
                Assert.Equal("recording", body.Str("status"));
                Assert.Equal("kept\n", body.Str("stdout.content"));
                var stopped = await service.WaitForExitAsync(TimeSpan.FromSeconds(60));
                output.WriteLine($"stopped: {stopped}; exit code {(stopped ? service.ExitCode : -1)}");
                Assert.True(stopped, "the service did not stop within 60 s of SIGTERM while PostgreSQL was away");
            }
            Assert.True(File.Exists(Path.Combine(_journal, _nodeId, $"{runId:D}.json")), "the run's outcome is not in the journal");
        }
        finally
        {
            await service.DisposeAsync();
        }

        await using var next = await StartAsync();
        string terminals = "";
        await Eventually.WaitUntilAsync(async () => (terminals = await _database.ScalarAsync<string>(
                "SELECT coalesce(string_agg(type, ',' ORDER BY seq_id), '') FROM sandbox.mt_events WHERE stream_id = $1 AND type IN ('run_completed', 'run_failed', 'run_abandoned')", runId) ?? "").Length > 0,
            () => "the journaled outcome was not committed after the restart", TimeSpan.FromSeconds(60), pollMs: 250);
        await Task.Delay(1000);
        Assert.Equal("run_completed", await _database.ScalarAsync<string>(
            "SELECT string_agg(type, ',') FROM sandbox.mt_events WHERE stream_id = $1 AND type IN ('run_completed', 'run_failed', 'run_abandoned')", runId));
        using var reader = next.Client(_setup.Token("bob", tenant, Roles.Runner));
        var (_, run) = await reader.GetJsonAsync($"/v1/runs/{runId}");
        Assert.Equal("succeeded", run.Str("status"));
        Assert.Equal("kept\n", run.Str("stdout.content"));
        next.Terminate();
        Assert.True(await next.WaitForExitAsync(TimeSpan.FromSeconds(60)));
        var violations = await FaultInvariants.CheckAsync(_database, _nodeId, _since, [tenant]);
        Assert.True(violations.Count == 0, string.Join("\n", violations));
    }
}
