using Marten;
using Microsoft.Extensions.Options;
using Npgsql;
using Sandbox.Audited.Api;
using Sandbox.Audited.Api.Audit;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Api.Callbacks;
using Sandbox.Audited.Api.Health;
using Sandbox.Audited.Api.Hosting;
using Sandbox.Audited.Api.Idempotency;
using Sandbox.Audited.Api.Metrics;
using Sandbox.Audited.Api.Nodes;
using Sandbox.Audited.Api.Policies;
using Sandbox.Audited.Api.Runs;
using Sandbox.Audited.Api.Runtimes;
using Sandbox.Audited.Api.Web;
using Sandbox.Audited.Api.Streaming;
using Sandbox.Audited.Audit;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Audit.Queue;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Audit.Policies;
using Sandbox.Audited.Audit.Runtimes;
using Sandbox.Audited.Audit.Logging;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Domain.Startup;
using Sandbox.Audited.Executor;
using Sandbox.Audited.Executor.Docker;
using Sandbox.Audited.Executor.Pool;
using Sandbox.Audited.Executor.Sandboxes;
using Serilog;

var builder = WebApplication.CreateBuilder(args).WithoutServerBanner();

// One-shot commands (migrate, token, schema, dev-key) run and exit without starting the server.
if (args.Length > 0 && Commands.Names.Contains(args[0]))
    return await Commands.RunAsync(args, builder.Configuration);

// Executor:NodeId names the journal folder, container labels and log lines: an id the node cannot use stops it here.
var nodeId = builder.Configuration["Executor:NodeId"] ?? Environment.MachineName;
if (NodeIds.Problem(nodeId) is { } unusable)
    return ExitCodes.NotStarting(ExitCodes.NodeIdUnusable, $"Executor:NodeId {NodeIds.Quote(nodeId)} cannot be used: {unusable}.");

// A start that fails exits with a documented code (sysexits) and one line saying what to fix (ExitCodes), never an abort.
try
{
    // Structured logs: console, and sandbox.logs through a bounded queue that never blocks a request (PostgresLogSink).
    builder.Services.AddSingleton(_ => new PostgresLogSink(
        builder.Configuration.GetConnectionString("Logs") ?? builder.Configuration.GetConnectionString("Sandbox")
            ?? throw new InvalidSettingException("ConnectionStrings:Sandbox is required."),
        nodeId));
    builder.Services.AddSerilog((services, logger) => logger
        .ReadFrom.Configuration(builder.Configuration)
        .Enrich.FromLogContext()
        .Filter.ByExcluding(ExitCodes.IsKnownStartFailureLog)
        .WriteTo.Console()
        .WriteTo.Sink(services.GetRequiredService<PostgresLogSink>()), preserveStaticLogger: true);

    // Node roles (Node:Roles): "api,executor" (one process, the default), "api" (no engine, no pool, no reaper) or "executor"
    // (health and metrics only, no /v1 API). Runs go from api to executor through the PostgreSQL run queue.
    var node = builder.Configuration.GetSection(NodeOptions.Section).Get<NodeOptions>() ?? new NodeOptions();
    node.Validate();
    builder.Services.Configure<NodeOptions>(builder.Configuration.GetSection(NodeOptions.Section));
    builder.Services.Configure<QueueOptions>(builder.Configuration.GetSection(QueueOptions.Section));

    // Authentication fails closed: missing or half-set configuration throws here.
    builder.Services.AddSandboxAuth(builder.Configuration);

    // PostgreSQL: Marten for events, a plain data source for audit SQL. The schema comes from migrations only.
    var connectionString = builder.Configuration.GetConnectionString("Sandbox")
        ?? throw new InvalidSettingException("ConnectionStrings:Sandbox is required.");
    builder.Services.AddSingleton(_ => NpgsqlDataSource.Create(connectionString));
    builder.Services.AddMarten(options => MartenSetup.Configure(options, connectionString))
    // Read models: the async daemon runs the daily statistics; HotCold so that of several nodes exactly one runs it.
    .AddAsyncDaemon(JasperFx.Events.Daemon.DaemonMode.HotCold);

    // Policies: the bundle is loaded at start-up (an invalid one stops start-up), recorded with its content before
    // serving, and reloaded when its files change or an admin asks; the warm pool follows its defaults.
    builder.Services.Configure<PolicyOptions>(builder.Configuration.GetSection(PolicyOptions.Section));
    builder.Services.AddSingleton(sp => new PolicyHost(PolicyDirectory.Load(sp.GetRequiredService<IOptions<PolicyOptions>>().Value.Directory)));
    builder.Services.AddSingleton<PolicyBundleStore>();
    builder.Services.AddSingleton<EvidenceStore>();
    builder.Services.AddSingleton<RunArtifacts>();
    builder.Services.Configure<RunInputOptions>(builder.Configuration.GetSection(RunInputOptions.Section));
    builder.Services.AddSingleton<EvidenceVerification>();
    // Removes stored contents no event names once their run can no longer name them (one node at a time), recording each removal.
    var evidenceSweep = (builder.Configuration.GetSection(EvidenceSweepOptions.Section).Get<EvidenceSweepOptions>() ?? new()).Validated();
    builder.Services.AddSingleton(sp => new EvidenceSweeper(sp.GetRequiredService<NpgsqlDataSource>(), sp.GetRequiredService<IDocumentStore>(), evidenceSweep,
        sp.GetRequiredService<IOptions<ExecutorOptions>>().Value.NodeId, sp.GetRequiredService<TimeProvider>(),
        sp.GetRequiredService<ILogger<EvidenceSweeper>>()));
    builder.Services.AddHostedService(sp => sp.GetRequiredService<EvidenceSweeper>());
    builder.Services.AddSingleton<PolicyActivationLog>();
    builder.Services.AddSingleton<PolicyReloader>();
    builder.Services.AddHostedService(sp => sp.GetRequiredService<PolicyReloader>());

    // Runtimes: the catalogue (an invalid one stops start-up) and the images recorded with their SBOMs.
    builder.Services.Configure<RuntimeOptions>(builder.Configuration.GetSection(RuntimeOptions.Section));
    builder.Services.AddSingleton(sp => RuntimeCatalogueLoader.Load(sp.GetRequiredService<IOptions<RuntimeOptions>>().Value, builder.Environment.ContentRootPath));
    builder.Services.AddSingleton<RuntimeImageLog>();
    builder.Services.AddSingleton<RuntimeImageRegistry>();
    if (node.Executor) // records the images its engine holds
    builder.Services.AddHostedService(sp => sp.GetRequiredService<RuntimeImageRegistry>());

    // Executor: Docker, sandboxes, warm pool, reaper.
    builder.Services.Configure<ExecutorOptions>(builder.Configuration.GetSection(ExecutorOptions.Section));
    builder.Services.AddSingleton(TimeProvider.System);
    builder.Services.AddSingleton<DockerEngine>();
    builder.Services.AddSingleton<SandboxRegistry>();
    builder.Services.AddSingleton<SandboxFactory>();
    builder.Services.AddSingleton<SandboxRunner>();
    builder.Services.AddSingleton<SandboxPool>();
    builder.Services.AddSingleton<Reaper>();
    builder.Services.AddSingleton<IRemovalLog, RunRemovalLog>();
    builder.Services.AddSingleton<RunQueue>();
    builder.Services.AddSingleton<QueueSignals>();
    builder.Services.AddHostedService(sp => sp.GetRequiredService<QueueSignals>());
    builder.Services.AddHostedService<NodeHeartbeat>();
    builder.Services.AddSingleton<FeedRelay>();
    builder.Services.AddHostedService(sp => sp.GetRequiredService<FeedRelay>());

    // Runs: admission, orchestration, start-up recovery and graceful shutdown (registered before the pool and reaper).
    builder.Services.Configure<AdmissionOptions>(builder.Configuration.GetSection(AdmissionOptions.Section));
    builder.Services.Configure<ShutdownOptions>(builder.Configuration.GetSection(ShutdownOptions.Section));
    builder.Services.AddSingleton<Admission>();
    builder.Services.AddSingleton<RunOrchestrator>();
    // Outcomes that could not be committed wait in a local journal (fsynced) and are committed when PostgreSQL returns.
    builder.Services.AddSingleton<OutcomeJournal>();
    builder.Services.AddSingleton<RunLifecycle>();
    builder.Services.AddHostedService(sp => sp.GetRequiredService<RunLifecycle>());
    builder.Services.AddHostedService(sp => sp.GetRequiredService<OutcomeJournal>());
    builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout =
    (builder.Configuration.GetSection(ShutdownOptions.Section).Get<ShutdownOptions>() ?? new ShutdownOptions()).HostTimeout);
    if (node.Executor)
    {
    builder.Services.AddHostedService(sp => sp.GetRequiredService<SandboxPool>());
    builder.Services.AddHostedService(sp => sp.GetRequiredService<Reaper>());
    builder.Services.AddHostedService<QueueWorker>();
    }

    // Audit trail: queries, verification, export and the access log (auditors and admins, own tenant only).
    builder.Services.AddAuditTrail();

    // Errors as RFC 9457 problem details.
    builder.Services.AddProblemDetails(o => o.CustomizeProblemDetails = Problems.Normalize);
    // A body or parameter the binder cannot read throws, so ProblemExceptionHandler answers it as /problems/invalid-request with why.
    builder.Services.Configure<Microsoft.AspNetCore.Routing.RouteHandlerOptions>(o => o.ThrowOnBadRequest = true);
    builder.Services.AddExceptionHandler<ProblemExceptionHandler>();

    // API (issue 6): per-subject rate limit, idempotency keys, run stream (SSE), signed callbacks, metrics, OpenAPI + /docs.
    builder.Services.AddRunRateLimits(builder.Configuration);
    builder.Services.AddSingleton<IdempotencyStore>();
    builder.Services.AddServiceMetrics();
    builder.Services.AddSingleton<RunFeed>();
    CallbackSender.AddCallbacks(builder.Services, builder.Configuration, deliver: node.Api);
    builder.Services.AddApiDocs();
    builder.Services.ConfigureHttpJsonOptions(o => o.SerializerOptions.Converters.Add(new System.Text.Json.Serialization.JsonStringEnumConverter()));

    // Behind a reverse proxy: X-Forwarded-For/-Proto from known proxies only (ForwardedHeaders:*), so the recorded client is real.
    builder.Services.AddForwardedHeadersFrom(builder.Configuration);

    var app = builder.Build();

    // The run path's commits and stream reads on connections that keep their prepared statements (Prepared); Marten's own stay as they are.
    var commitConnections = NpgsqlDataSource.Create(Prepared.ConnectionString(connectionString));
    GroupCommit.For(app.Services.GetRequiredService<IDocumentStore>()).Connections = commitConnections;
    app.Lifetime.ApplicationStopped.Register(commitConnections.Dispose);

    app.UseRequestClock();
    app.UseForwardedHeadersWhenConfigured();
    app.UseNoStoreForApi();
    app.UseExceptionHandler();
    app.UseStatusCodePages();

    // Web pages: the playground (/) and the audit viewer (/audit/), bundled from web/ into wwwroot by `sbx`;
    // the development sign-in (POST /v1/dev/token) is mapped only when Auth:Mode is development.
    app.UseWebPages();
    app.MapDevTokens(app.Configuration);

    // A draining node (SIGTERM) answers new runs 503 + Retry-After before anything of them is recorded.
    app.UseDrainRefusal();

    app.UseAuthentication();
    app.UseAuthorization();
    app.UseRateLimiter();

    app.MapHealth();
    app.MapMetrics();
    if (!node.Api)
        return ExitCodes.Run(app); // an executor-only node serves health and metrics, no API
    app.MapApiDocs();
    app.MapRuns();
    app.MapPolicies();
    app.MapAudit();
    app.MapRunStream();
    app.MapReproduce();
    app.MapEvidenceBundle();
    app.MapRuntimes();

    return ExitCodes.Run(app);
}
catch (Exception e) when (ExitCodes.IsThisProgram)
{
    return ExitCodes.NotStarting(e);
}

public partial class Program;
