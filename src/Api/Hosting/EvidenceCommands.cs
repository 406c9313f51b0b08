using Npgsql;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Audit.Logging;
using Sandbox.Audited.Audit.Queue;
using Sandbox.Audited.Domain.Evidence;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Domain.Startup;
using Serilog;

namespace Sandbox.Audited.Api.Hosting;

/// <summary>
/// `evidence release-holds NODE` (`./sbx evidence release-holds NODE`): the operator says a node never comes back, so the
/// evidence sweep may release its holds (NodeHoldRelease decides whether it may; NodeHoldReleases records it). Exit codes:
/// 0 released, or nothing held; 1 refused (the node may still need its content); 64 usage or an id that is no node id
/// (nothing was read or written); 69 PostgreSQL unreachable; 78 migrations not applied.
/// </summary>
public static class EvidenceCommands
{
    public const int Refused = 1;
    public const int Usage = 64;

    private const string Synopsis = "usage: sbx evidence release-holds NODE_ID   (release the evidence holds of a node that never comes back)";

    public static async Task<int> RunAsync(string[] args, IConfiguration configuration)
    {
        if (args.Length != 3 || args[1] != "release-holds")
            return Fail(Usage, Synopsis);
        var node = args[2];
        // Checked before anything is read or written: an id no node can have would only be a typo released.
        if (NodeIds.Problem(node) is { } problem)
            return Fail(Usage, $"sbx evidence release-holds: {NodeIds.Quote(node)} is not a node id: {problem}. Nothing was released.");

        var connection = configuration.GetConnectionString("Sandbox")
            ?? throw new InvalidSettingException("ConnectionStrings:Sandbox is required (run it as `./sbx evidence release-holds NODE_ID`).");
        var queue = configuration.GetSection(QueueOptions.Section).Get<QueueOptions>() ?? new QueueOptions();
        var sweep = configuration.GetSection(EvidenceSweepOptions.Section).Get<EvidenceSweepOptions>() ?? new EvidenceSweepOptions();
        var by = $"{Environment.UserName}@{Environment.MachineName}";

        NodeHoldReleaseResult result;
        try
        {
            await using var database = NpgsqlDataSource.Create(connection);
            result = await NodeHoldReleases.ReleaseAsync(database, node, TimeSpan.FromSeconds(queue.AbandonGraceSeconds), by, CancellationToken.None);
        }
        catch (PostgresException e) when (e.SqlState is PostgresErrorCodes.UndefinedTable or PostgresErrorCodes.InsufficientPrivilege)
        {
            return Fail(StartFailures.ExConfig, $"sbx evidence release-holds: the database is behind this version ({e.SqlState}: {e.MessageText}); apply the migrations (migration 0101). Nothing was released.");
        }
        catch (NpgsqlException e) when (e is not PostgresException)
        {
            return Fail(StartFailures.ExUnavailable, $"sbx evidence release-holds: PostgreSQL is unreachable ({e.Message}). Nothing was released.");
        }

        await LogAsync(configuration, connection, result, by);
        switch (result.Verdict)
        {
            case NodeReleaseVerdict.Release release:
                Console.WriteLine(release.Reason);
                foreach (var (tenant, holds) in result.Facts.HoldsByTenant)
                    Console.WriteLine($"  tenant {tenant}: {holds} hold(s)");
                Console.WriteLine($"The evidence sweep now releases them and removes the content no event names once it is older than EvidenceSweep:GraceSeconds "
                    + $"({sweep.GraceSeconds} s), recording each removal as evidence_swept; content an event names stays. This command removed nothing.");
                return 0;
            case NodeReleaseVerdict.NothingHeld nothing:
                Console.WriteLine(nothing.Reason);
                return 0;
            default:
                return Fail(Refused, result.Verdict.Reason);
        }
    }

    // Operational state, not an audit fact: a line in sandbox.logs (the release row keeps when and by whom; evidence_swept records each removal).
    private static async Task LogAsync(IConfiguration configuration, string connection, NodeHoldReleaseResult result, string by)
    {
        await using var sink = new PostgresLogSink(configuration.GetConnectionString("Logs") ?? connection, configuration["Executor:NodeId"] ?? Environment.MachineName);
        using (var root = new LoggerConfiguration().WriteTo.Sink(sink).CreateLogger())
        {
            var logger = root.ForContext("SourceContext", typeof(EvidenceCommands).FullName);
            var perTenant = string.Join(", ", result.Facts.HoldsByTenant.Select(t => $"{t.Key}: {t.Value}"));
            if (result.Verdict is NodeReleaseVerdict.Release)
                logger.Information("Evidence holds of node {Node:l} released by {By:l}: {Holds} hold(s) ({PerTenant:l}); the sweep removes their content no event names",
                    result.Facts.Node, by, result.Facts.Holds, perTenant);
            else if (result.Verdict is NodeReleaseVerdict.Refuse)
                logger.Warning("Release of the evidence holds of node {Node:l} by {By:l} refused: {Reason:l}", result.Facts.Node, by, result.Verdict.Reason);
        }
    }

    private static int Fail(int code, string message)
    {
        Console.Error.WriteLine(message);
        return code;
    }
}
