using System.Collections.Concurrent;
using System.Net;
using System.Text.Json.Nodes;
using Marten;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Sandbox.Audited.Api.Runs;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Audit;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Evidence;

/// <summary>The answer to the request that ran a run, when a stored output cannot be read back from the store.</summary>
[Collection(ErasureAttackCollection.Name)]
public sealed class RunAnswerReadBackTests(ErasureAttackFixture service)
{
    [Fact]
    public async Task AnOutputTheRunningRequestCannotReadBackIsAnsweredUnavailableAndLoggedWithTheRunId()
    {
        var tenant = AuditTestClient.NewTenant("ra-log");
        // Over 64 KiB: the answer reads it back from the store rather than from memory.
        var (response, ran) = await service.Runner("alice", tenant).RunAsync(new { language = "python", code = "print('y' * 100000)" });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var runId = Guid.Parse(ran.Str("runId"));
        RunSummary run;
        await using (var session = service.Services.GetRequiredService<IDocumentStore>().QuerySession())
            run = RunSummary.Fold(runId, (await session.Events.FetchStreamAsync(runId)).Select(e => e.Data));
        var logs = new CapturedLogs();
        await using var services = new Microsoft.Extensions.DependencyInjection.ServiceCollection().AddLogging(b => b.AddProvider(logs)).AddOptions().BuildServiceProvider();
        var http = new DefaultHttpContext { RequestServices = services };
        http.Response.Body = new MemoryStream();

        await service.Database.ExecuteAsync("REVOKE SELECT ON sandbox.evidence_chunks FROM sandbox_app");
        try
        {
            await new RunAnswer(run, service.Services.GetRequiredService<EvidenceStore>(), justRun: true).ExecuteAsync(http);
        }
        finally
        {
            await service.Database.ExecuteAsync("GRANT SELECT ON sandbox.evidence_chunks TO sandbox_app");
        }

        var answer = JsonNode.Parse(((MemoryStream)http.Response.Body).ToArray())!;
        Assert.Equal(RunAnswer.Unavailable, answer.Str("stdout.encoding"));
        var logged = Assert.Single(logs.Entries, e => e.Level == LogLevel.Warning && e.Category == typeof(RunAnswer).FullName);
        Assert.Contains(runId.ToString(), logged.Message, StringComparison.Ordinal);
        Assert.Contains("stdout", logged.Message, StringComparison.Ordinal);
        Assert.NotNull(logged.Exception);
    }

    private sealed record Entry(string Category, LogLevel Level, string Message, Exception? Exception);

    private sealed class CapturedLogs : ILoggerProvider
    {
        public ConcurrentQueue<Entry> Entries { get; } = new();

        public ILogger CreateLogger(string categoryName) => new Logger(categoryName, Entries);

        public void Dispose()
        {
        }

        private sealed class Logger(string category, ConcurrentQueue<Entry> entries) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
                entries.Enqueue(new Entry(category, logLevel, formatter(state, exception), exception));
        }
    }
}
