using JasperFx;
using JasperFx.Events;
using Marten;
using JasperFx.Events.Projections;
using Sandbox.Audited.Audit.Events;
using Sandbox.Audited.Audit.ReadModels;
using Weasel.Core;

namespace Sandbox.Audited.Audit;

public static class MartenSetup
{
    public const string Schema = "sandbox";

    /// <summary>
    /// The one Marten configuration. The schema is never created at runtime: migrations/ holds it and the
    /// service connects as sandbox_app, which could not create it anyway. No Marten feature that rewrites
    /// events (archiving, masking, tombstones, compaction) is enabled here or called anywhere.
    /// </summary>
    public static void Configure(StoreOptions options, string connectionString)
    {
        options.Connection(connectionString);
        options.DatabaseSchemaName = Schema;
        options.AutoCreateSchemaObjects = AutoCreate.None;
        options.UseSystemTextJsonForSerialization(EnumStorage.AsString, Casing.CamelCase);

        options.Events.StreamIdentity = StreamIdentity.AsGuid;
        options.Events.MetadataConfig.HeadersEnabled = true;
        options.Events.MetadataConfig.CorrelationIdEnabled = true;
        options.Events.MetadataConfig.CausationIdEnabled = true;
        options.Events.MetadataConfig.UserNameEnabled = true;
        foreach (var (type, name) in EventCatalog.Names)
            options.Events.MapEventType(type, name);

        // Read model: daily statistics by the async daemon. A run's summary is folded from its stream when read: an inline
        // summary document cost every commit more than it saved reads (README, "Read models").
        options.Projections.Add(new RunDailyStatisticsProjection(), ProjectionLifecycle.Async);
    }
}
