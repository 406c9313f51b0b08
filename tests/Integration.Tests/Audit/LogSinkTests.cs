using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Sandbox.Audited.Audit.Logging;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Audit;

[Collection(Infrastructure.ServiceCollection.Name)]
public sealed class LogSinkTests(ServiceFixture service)
{
    [Fact]
    public async Task LogsWithARunIdLandInTheLogTable()
    {
        var runId = Guid.NewGuid();
        var logger = service.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Sandbox.Audited.Tests");

        using (logger.BeginScope(new Dictionary<string, object> { ["CorrelationId"] = "corr-log-test" }))
            logger.LogInformation("Run {RunId}: sink test {Marker}", runId, "m-1");

        long rows = 0;
        for (var attempt = 0; attempt < 100 && rows == 0; attempt++)
        {
            await Task.Delay(100);
            rows = await service.Database.ScalarAsync<long>(
                "SELECT count(*) FROM sandbox.logs WHERE run_id = $1 AND correlation_id = 'corr-log-test' AND level = 'Information' AND properties ->> 'Marker' = 'm-1'", runId);
        }
        var sink = service.Services.GetRequiredService<PostgresLogSink>();
        var stored = await service.Database.ScalarAsync<string>("SELECT string_agg(message || ' ' || coalesce(run_id::text, '-') || ' ' || coalesce(correlation_id, '-') || ' ' || properties::text, E'\n') FROM sandbox.logs");
        Assert.True(rows == 1, $"written {sink.Written}, failed {sink.Failed}, dropped {sink.Dropped}: {stored}");
    }
}

/// <summary>The log database is unreachable: runs must not notice.</summary>
public sealed class BrokenLogDatabaseFixture : ServiceFixture
{
    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["ConnectionStrings:Logs"] = "Host=127.0.0.1;Port=1;Database=nowhere;Username=nobody;Password=x;Timeout=1",
    };
}

[CollectionDefinition(Name)]
public sealed class BrokenLogDatabaseCollection : ICollectionFixture<BrokenLogDatabaseFixture>
{
    public const string Name = "broken-log-database";
}

[Collection(BrokenLogDatabaseCollection.Name)]
public sealed class BrokenLogDatabaseTests(BrokenLogDatabaseFixture service)
{
    [Fact]
    public async Task ABrokenLogDatabaseNeverFailsARunAndItsLossIsCounted()
    {
        var sink = service.Services.GetRequiredService<PostgresLogSink>();
        var logger = service.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Sandbox.Audited.Tests");

        var (response, body) = await service.Runner("lou", "tenant-broken-logs").RunAsync(new { language = "shell", code = "echo still-fine" });
        logger.LogWarning("Run {RunId}: this log line cannot be stored", body.Str("runId"));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("succeeded", body.Str("status"));
        for (var attempt = 0; attempt < 100 && sink.Failed == 0; attempt++)
            await Task.Delay(100);
        Assert.True(sink.Failed > 0, "lost log events are counted");
        Assert.Equal(0, sink.Written);
    }
}
