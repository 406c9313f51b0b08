using Microsoft.Extensions.DependencyInjection;
using Microsoft.AspNetCore.Mvc.Testing;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Tests.Infrastructure;

/// <summary>
/// The real service (real pipeline, real JWT validation) against a fresh PostgreSQL database and the real
/// Docker engine. One per test collection; tests keep apart by using their own tenants and subjects.
/// </summary>
public class ServiceFixture : IAsyncLifetime
{
    private WebApplicationFactory<Program>? _factory;

    // Null for a fixture that owns its database and keys; set for a second node sharing another fixture's.
    private readonly ServiceFixture? _first;

    public ServiceFixture()
    {
    }

    /// <summary>Another node of the same service: the first node's database and keys (its tokens are valid here), its own node id.</summary>
    protected ServiceFixture(ServiceFixture first)
    {
        _first = first;
        Database = first.Database;
        KeyPath = first.KeyPath;
        CheckpointKeyPath = first.CheckpointKeyPath;
        NoteKeyPath = first.NoteKeyPath;
    }

    public TestDatabase Database { get; } = new();

    public string NodeId { get; } = "test-" + Guid.NewGuid().ToString("N")[..8];

    /// <summary>This host's own spool (uploads, spilled output): a test can see what it leaves behind.</summary>
    public string SpoolDirectory { get; } = Path.Combine(Path.GetTempPath(), "sbx-test-spool-" + Guid.NewGuid().ToString("N")[..8]);

    public string KeyPath { get; } = Path.Combine(Path.GetTempPath(), "sbx-test-key-" + Guid.NewGuid().ToString("N") + ".pem");

    /// <summary>The key that signs audit checkpoints (Audit:CheckpointKeyPath).</summary>
    public string CheckpointKeyPath { get; } = Path.Combine(Path.GetTempPath(), "sbx-test-checkpoint-key-" + Guid.NewGuid().ToString("N") + ".pem");

    /// <summary>The Ed25519 key that signs checkpoints as C2SP signed notes (Audit:NoteKeyPath).</summary>
    public string NoteKeyPath { get; } = Path.Combine(Path.GetTempPath(), "sbx-test-note-key-" + Guid.NewGuid().ToString("N") + ".pem");

    /// <summary>The one tenant checkpointed on a schedule (every second); every other tenant only on request.</summary>
    public string ScheduledTenant { get; } = "scheduled-" + Guid.NewGuid().ToString("N")[..8];

    public AuthOptions Auth => TestNode.Auth(KeyPath);

    /// <summary>Extra configuration for a fixture that needs different settings.</summary>
    protected virtual IDictionary<string, string?> Settings => new Dictionary<string, string?>();

    public IServiceProvider Services => _factory!.Services;

    /// <summary>Lets a fixture change the host before it starts (a browser needs Kestrel on a real port).</summary>
    protected virtual void ConfigureFactory(WebApplicationFactory<Program> factory)
    {
    }

    public virtual async Task InitializeAsync()
    {
        if (_first is null)
        {
            await Database.CreateAsync();
            DevelopmentKeys.Create(KeyPath);
            DevelopmentKeys.Create(CheckpointKeyPath);
            Sandbox.Audited.Audit.Trail.NoteSigner.CreateKey(NoteKeyPath);
        }
        var settings = TestNode.Settings(Database.AppConnection, KeyPath, NodeId);
        settings["Executor:SpoolDirectory"] = SpoolDirectory;
        settings["Audit:CheckpointKeyPath"] = CheckpointKeyPath;
        settings["Audit:NoteKeyPath"] = NoteKeyPath;
        settings[$"Audit:CheckpointIntervals:{ScheduledTenant}"] = "00:00:01";
        _factory = TestNode.Create(settings, Settings);
        ConfigureFactory(_factory);
        _factory.StartServer();
    }

    public HttpClient Client(string? token = null)
    {
        var client = _factory!.CreateClient();
        client.Timeout = TimeSpan.FromSeconds(60);
        if (token is not null)
            client.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);
        return client;
    }

    /// <summary>
    /// A client straight on the test server's handler: the factory's default client buffers each request body whole (to
    /// replay it on a redirect), which would hide whether the service itself streams a large upload.
    /// </summary>
    public HttpClient StreamingClient(string token)
    {
        var client = new HttpClient(_factory!.Server.CreateHandler()) { BaseAddress = _factory.Server.BaseAddress, Timeout = TimeSpan.FromSeconds(120) };
        client.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);
        return client;
    }

    public string Token(string subject, string tenant, params string[] roles) =>
        DevelopmentTokens.Mint(Auth, subject, tenant, roles, TimeSpan.FromMinutes(30));

    public HttpClient Runner(string subject, string tenant) => Client(Token(subject, tenant, Roles.Runner));

    /// <summary>
    /// PostgreSQL goes away for this node (its connections are ended, new ones refused: TestDatabase.AwayForServiceAsync)
    /// until the returned handle is disposed; then the node's pools drop the connections the outage ended, so that the next
    /// test does not meet one of them as a first request after an outage would.
    /// </summary>
    public async Task<IAsyncDisposable> StoreAwayAsync() => new StoreBack(this, await Database.AwayForServiceAsync());

    private sealed class StoreBack(ServiceFixture node, IAsyncDisposable away) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            await away.DisposeAsync();
            node.Services.GetRequiredService<Npgsql.NpgsqlDataSource>().Clear();
            ((Weasel.Postgresql.PostgresqlDatabase)node.Services.GetRequiredService<Marten.IDocumentStore>().Storage.Database).DataSource.Clear();
            Sandbox.Audited.Audit.Runs.GroupCommit.For(node.Services.GetRequiredService<Marten.IDocumentStore>()).Connections?.Clear(); // the run path's commits
            // The rate limiter's own pool is not reachable from here: requests drain its ended connections (one 503 each)
            // until several in a row get through to validation (400).
            using var probe = node.Runner("probe", "tenant-probe");
            var through = 0;
            for (var attempt = 0; attempt < 100 && through < 10; attempt++)
            {
                using var answer = await probe.PostAsync("/v1/runs", new StringContent("{}", System.Text.Encoding.UTF8, "application/json"));
                through = answer.StatusCode == System.Net.HttpStatusCode.ServiceUnavailable ? 0 : through + 1;
            }
        }
    }

    /// <summary>Stops this node's service as a shutdown does (hosted services stop); the database stays.</summary>
    public async Task StopServiceAsync()
    {
        if (_factory is not null)
            await _factory.DisposeAsync();
        _factory = null;
    }

    public virtual async Task DisposeAsync()
    {
        await StopServiceAsync();
        if (Directory.Exists(SpoolDirectory))
            Directory.Delete(SpoolDirectory, recursive: true);
        if (_first is not null)
            return;
        await Database.DisposeAsync();
        File.Delete(KeyPath);
        File.Delete(CheckpointKeyPath);
        File.Delete(NoteKeyPath);
    }
}

[CollectionDefinition(Name)]
public sealed class ServiceCollection : ICollectionFixture<ServiceFixture>
{
    public const string Name = "service";
}
