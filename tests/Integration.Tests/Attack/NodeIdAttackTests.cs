using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Tests.Executor;
using Sandbox.Audited.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Sandbox.Audited.Tests.Attack;

/// <summary>
/// Attack on Executor:NodeId: the id names the node's journal folder (JournalDirectory/{node}), its containers' label, its
/// log lines and its row in sandbox.nodes. An id that climbs out of the journal folder made start-up delete and move files
/// that were never the journal's; an id the node cannot use must stop it before it touches anything, with exit code 78.
/// </summary>
public sealed class NodeIdAttackTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly TestDatabase _database = new();
    private readonly string _keyPath = Path.Combine(Path.GetTempPath(), "sbx-nodeid-key-" + Guid.NewGuid().ToString("N")[..8] + ".json");
    private readonly string _root = Path.Combine(Path.GetTempPath(), "sbx-nodeid-" + Guid.NewGuid().ToString("N")[..8]);

    public async Task InitializeAsync()
    {
        await _database.CreateAsync();
        DevelopmentKeys.Create(_keyPath);
    }

    public async Task DisposeAsync()
    {
        await _database.DisposeAsync();
        File.Delete(_keyPath);
        if (Directory.Exists(_root))
            Directory.Delete(_root, recursive: true);
    }

    [Fact]
    public async Task ANodeIdThatClimbsOutOfTheJournalFolderIsRefusedAtStartAndNoFileOutsideItIsTouched()
    {
        // Someone else's folder beside the journal: files the journal's start-up clean-up and its worker would take for its own.
        var journal = Path.Combine(_root, "journal");
        var outside = Path.Combine(_root, "outside");
        Directory.CreateDirectory(journal);
        Directory.CreateDirectory(outside);
        var victims = new[] { "download.tmp", "report.0199aaaa-0000-0000-0000-000000000000.abc.content", "settings.json" }
            .Select(name => Path.Combine(outside, name)).ToList();
        foreach (var victim in victims)
            await File.WriteAllTextAsync(victim, "{\"not\":\"a journal file\"}");

        var (exitCode, log) = await ServiceProcess.RunToExitAsync(new ServiceProcess.Setup(_database, _keyPath, "../outside"),
            new Dictionary<string, string> { ["Executor__JournalDirectory"] = journal }, TimeSpan.FromSeconds(45));
        output.WriteLine(log);

        foreach (var victim in victims)
            Assert.True(File.Exists(victim), $"{Path.GetFileName(victim)} outside the journal folder was deleted or moved");
        Assert.False(Directory.Exists(Path.Combine(outside, "rejected")), "the journal set files aside in a folder that is not its own");
        Assert.Equal(78, exitCode);
        Assert.Contains("sandbox-audited: not starting (exit code 78): Executor:NodeId", log, StringComparison.Ordinal);
        Assert.Equal(0, await _database.ScalarAsync<long>("SELECT count(*) FROM sandbox.nodes"));
    }

    [Theory]
    [InlineData("/tmp")]
    [InlineData("..")]
    [InlineData("a/b")]
    [InlineData("node\nforged log line")]
    [InlineData("nœud-1")]
    [InlineData("")]
    [InlineData("-rf")]
    [InlineData("LONG")]
    public async Task ANodeIdTheNodeCannotUseStopsItWithExitCode78AndSaysWhy(string nodeId)
    {
        if (nodeId == "LONG")
            nodeId = new string('n', 2000);
        var journal = Path.Combine(_root, "journal");
        Directory.CreateDirectory(journal);

        var (exitCode, log) = await ServiceProcess.RunToExitAsync(new ServiceProcess.Setup(_database, _keyPath, nodeId),
            new Dictionary<string, string> { ["Executor__JournalDirectory"] = journal }, TimeSpan.FromSeconds(45));
        output.WriteLine(log.Length > 4000 ? log[..4000] : log);

        Assert.Equal(78, exitCode);
        Assert.Contains("sandbox-audited: not starting (exit code 78): Executor:NodeId", log, StringComparison.Ordinal);
        Assert.DoesNotContain("Unhandled exception", log, StringComparison.Ordinal);
        // The id is quoted escaped: its newline never starts a log line of its own.
        Assert.DoesNotContain(log.Split('\n'), line => line.StartsWith("forged log line", StringComparison.Ordinal));
        Assert.Equal(0, await _database.ScalarAsync<long>("SELECT count(*) FROM sandbox.nodes"));
    }
}
