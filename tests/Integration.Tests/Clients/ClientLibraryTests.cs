using System.Net;
using System.Text;
using Sandbox.Audited.Client;
using Sandbox.Audited.Tests.Infrastructure;
using Roles = Sandbox.Audited.Domain.Runs.Roles;

namespace Sandbox.Audited.Tests.Clients;

/// <summary>The .NET client library against the real service: typed results, live streams, problems as exceptions.</summary>
[Collection(ServiceCollection.Name)]
public sealed class ClientLibraryTests(ServiceFixture service)
{
    private const string Tenant = "tenant-client-lib";

    private SandboxAuditedClient As(string subject, params string[] roles) =>
        new(service.Client(), service.Token(subject, Tenant, roles));

    [Fact]
    public async Task StartsARunAndReadsItsChainedRecord()
    {
        var client = As("carol", Roles.Runner);

        var run = await client.StartRunAsync(new RunRequest("python", "import sys\nprint(sys.stdin.read().upper())\nsys.exit(4)") { Stdin = "abc" });

        Assert.Equal("failed", run.Status);
        Assert.Equal(4, run.ExitCode);
        Assert.Equal("ABC\n", Encoding.UTF8.GetString(run.Stdout!.ToBytes()));
        var events = await client.GetEventsAsync(run.RunId);
        Assert.Equal("run_requested", events[0].Type);
        Assert.Contains(events, e => e.Type == "run_completed");
        for (var i = 1; i < events.Count; i++)
            Assert.Equal(events[i - 1].Hash, events[i].PrevHash);
        Assert.Equal(run, await client.GetRunAsync(run.RunId) with { Stdout = run.Stdout, Stderr = run.Stderr, Errors = run.Errors });
    }

    [Fact]
    public async Task StreamsARunLiveUntilItEnds()
    {
        var client = As("dave", Roles.Runner);

        var started = await client.StartRunAsync(new RunRequest("shell", "echo one; sleep 0.2; echo two >&2; echo three") { Wait = false });
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        var names = new List<string>();
        await foreach (var message in client.StreamAsync(started.RunId))
        {
            names.Add(message.Event);
            if (message.IsStdout)
                stdout.Append(Encoding.UTF8.GetString(message.OutputBytes()));
            if (message.IsStderr)
                stderr.Append(Encoding.UTF8.GetString(message.OutputBytes()));
        }

        Assert.Equal("one\nthree\n", stdout.ToString());
        Assert.Equal("two\n", stderr.ToString());
        Assert.Equal("end", names[^1]);
        Assert.Contains("run_completed", names);
        Assert.Equal("succeeded", (await client.GetRunAsync(started.RunId)).Status);
    }

    [Fact]
    public async Task ArtifactsAreListedAndDownloadedAgainstTheirDigests()
    {
        var client = As("gus", Roles.Runner);
        var run = await client.StartRunAsync(new RunRequest("shell", "mkdir -p out && printf 'a,b\\n' > out/r.csv && ln -s /etc/passwd out/link"));

        var artifacts = await client.GetArtifactsAsync(run.RunId);
        using var content = new MemoryStream();
        var sha = await client.DownloadArtifactAsync(artifacts.Single(a => a.Name == "r.csv"), content);

        Assert.Equal("a,b\n", Encoding.UTF8.GetString(content.ToArray()));
        Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(content.ToArray())), sha);
        var link = artifacts.Single(a => a.Name == "link");
        Assert.False(link.IsStored);
        await Assert.ThrowsAsync<InvalidOperationException>(() => client.DownloadArtifactAsync(link, Stream.Null));
    }

    [Fact]
    public async Task ABadRequestIsATypedProblemWithTheRecordedRun()
    {
        var client = As("erin", Roles.Runner);

        var problem = await Assert.ThrowsAsync<ProblemException>(() => client.StartRunAsync(new RunRequest("cobol", "DISPLAY 'HI'.")));

        Assert.Equal(HttpStatusCode.BadRequest, problem.Status);
        Assert.Equal("/problems/invalid-request", problem.Type);
        Assert.NotNull(problem.RunId);
        Assert.Contains(problem.Errors, e => e.Contains("language", StringComparison.OrdinalIgnoreCase));
    }

    [Fact]
    public async Task AnAuditorExportsWhatARunnerRecorded()
    {
        var run = await As("frank", Roles.Runner).StartRunAsync(new RunRequest("javascript", "console.log(6 * 7)"));
        var auditor = As("ivy", Roles.Auditor);

        using var export = new MemoryStream();
        await auditor.ExportAsync(export, query: "subject=frank");
        var lines = Encoding.UTF8.GetString(export.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries);

        Assert.Contains(lines, l => l.Contains(run.RunId.ToString()) && l.Contains("run_completed"));
        var verdict = await auditor.VerifyRunAsync(run.RunId);
        Assert.True(verdict.GetProperty("verified").GetBoolean());
        var denied = await Assert.ThrowsAsync<ProblemException>(() => auditor.StartRunAsync(new RunRequest("python", "print(1)")));
        Assert.Equal(HttpStatusCode.Forbidden, denied.Status);
    }
}
