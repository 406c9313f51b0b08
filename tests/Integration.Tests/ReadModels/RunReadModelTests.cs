using System.Text.Json;
using Marten;
using Marten.Events;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using Sandbox.Audited.Audit.ReadModels;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Audit;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.ReadModels;

[Collection(Infrastructure.ServiceCollection.Name)]
public sealed class RunReadModelTests(ServiceFixture service)
{
    [Fact]
    public async Task DailyStatisticsAreRebuiltFromEventsWithoutLoss()
    {
        var tenant = "readmodels-" + Guid.NewGuid().ToString("N")[..6];
        await AuditSeed.RunAsync(service, tenant, "ann");
        await AuditSeed.RunAsync(service, tenant, "ann", language: "javascript", status: RunStatus.Failed);
        await AuditSeed.RunAsync(service, tenant, "bob", status: RunStatus.Denied);
        var store = service.Services.GetRequiredService<IDocumentStore>();
        await store.WaitForNonStaleProjectionDataAsync(TimeSpan.FromSeconds(60));

        var statistics = await ReadAsync(store, tenant);
        var ann = Assert.Single(statistics, s => s.Subject == "ann");
        Assert.Equal((2, 2, 1, 1), (ann.Runs, ann.Completed, ann.ByLanguage["python"], ann.ByStatus[RunStatus.Failed]));
        var bob = Assert.Single(statistics, s => s.Subject == "bob");
        Assert.Equal(1, bob.ByStatus[RunStatus.Denied]);

        var eventsBefore = await EventsFingerprintAsync();
        using (var daemon = await store.BuildProjectionDaemonAsync())
        {
            await daemon.RebuildProjectionAsync(RunDailyStatisticsProjection.ProjectionName, TimeSpan.FromMinutes(2), CancellationToken.None);
        }
        var statisticsAfter = await ReadAsync(store, tenant);

        Assert.Equal(Json(statistics), Json(statisticsAfter));
        Assert.Equal(eventsBefore, await EventsFingerprintAsync());
    }

    private static async Task<List<RunDailyStatistics>> ReadAsync(IDocumentStore store, string tenant)
    {
        await using var session = store.QuerySession();
        return (await session.Query<RunDailyStatistics>().Where(s => s.Tenant == tenant).ToListAsync()).OrderBy(s => s.Id).ToList();
    }

    private async Task<string> EventsFingerprintAsync()
    {
        await using var connection = new NpgsqlConnection(service.Database.AdminConnection);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "SELECT count(*)::text || ':' || coalesce(md5(string_agg(seq_id::text || data::text || headers::text, ',' ORDER BY seq_id)), '') FROM sandbox.mt_events", connection);
        return (string)(await command.ExecuteScalarAsync())!;
    }

    private static string Json(object value) => JsonSerializer.Serialize(value);
}
