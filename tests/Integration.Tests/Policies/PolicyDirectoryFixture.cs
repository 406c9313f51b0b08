using System.Net;
using System.Net.Http.Json;
using Npgsql;
using Sandbox.Audited.Api.Policies;
using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Policies;

/// <summary>The service deciding with a policy directory the tests write (a temp dir), watched for changes.</summary>
public sealed class PolicyDirectoryFixture : ServiceFixture, IAsyncLifetime
{
    public const string BaseYaml = """
        defaults: { timeoutMs: 10000, memoryMb: 128, cpus: 1, pids: 64, outputBytes: 65536, tmpfsMb: 16 }
        ceilings: { timeoutMs: 60000, memoryMb: 512, cpus: 2, pids: 256, outputBytes: 4194304, tmpfsMb: 128 }
        rules:
          - id: runners
            effect: permit
            description: runners may run anything within generous limits
            when: { roles: [runner] }
            limits: { memoryMb: 256, timeoutMs: 30000 }
          - id: forbid-tenant-permit
            effect: permit
            description: the forbid tenant is explicitly permitted shell
            when: { tenants: [t-forbid], languages: [shell] }
          - id: tight-tenant
            effect: permit
            description: the tight tenant gets small sandboxes
            when: { tenants: [t-tight] }
            limits: { memoryMb: 96, pids: 32 }
        """;

    public const string ForbidYaml = """
        rules:
          - id: no-shell-for-forbid-tenant
            effect: forbid
            description: the forbid tenant may not run shell
            when: { tenants: [t-forbid], languages: [shell] }
        """;

    public static readonly IReadOnlyDictionary<string, string> BaseBundle = new Dictionary<string, string>
    {
        ["base.yaml"] = BaseYaml,
        ["forbid.yaml"] = ForbidYaml,
    };

    public string Directory { get; } = System.IO.Directory.CreateTempSubdirectory("sbx-policies-").FullName;

    public PolicyDirectoryFixture() => WriteFiles(BaseBundle);

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Policies:Directory"] = Directory,
        ["Policies:ReloadDebounceMs"] = "200",
    };

    public string DigestOnDisk => PolicyDirectory.Load(Directory).Digest;

    /// <summary>Makes the directory hold exactly these files, each written whole (write aside, then rename in).</summary>
    public void WriteFiles(IReadOnlyDictionary<string, string> files)
    {
        foreach (var stale in System.IO.Directory.GetFiles(Directory).Where(f => !files.ContainsKey(Path.GetFileName(f))))
            File.Delete(stale);
        foreach (var (name, content) in files)
        {
            var path = Path.Combine(Directory, name);
            if (File.Exists(path) && File.ReadAllText(path) == content)
                continue;
            var aside = Path.Combine(Path.GetTempPath(), "sbx-policy-" + Guid.NewGuid().ToString("N"));
            File.WriteAllText(aside, content);
            File.Move(aside, path, overwrite: true);
        }
    }

    /// <summary>Writes the files and makes them the active bundle (the watcher may beat the admin reload to it).</summary>
    public async Task<string> UseBundleAsync(IReadOnlyDictionary<string, string> files)
    {
        WriteFiles(files);
        var response = await Client(Token("policy-admin", "service", "admin")).PostAsync("/v1/policies/reload", null);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var active = await Client(Token("policy-admin", "service", "admin")).GetFromJsonAsync<ActiveDigest>("/v1/policies");
        Assert.Equal(DigestOnDisk, active!.Digest);
        return active.Digest;
    }

    /// <summary>The policy activations stream's events, oldest first: (type, data as JSON text, hash, prevHash).</summary>
    public async Task<List<(string Type, string Data, string Hash, string PrevHash)>> ActivationEventsAsync()
    {
        await using var connection = new NpgsqlConnection(Database.AdminConnection);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "SELECT type, data::text, headers ->> 'hash', headers ->> 'prevHash' FROM sandbox.mt_events WHERE stream_id = $1 ORDER BY version", connection);
        command.Parameters.AddWithValue(PolicyActivations.StreamId);
        var events = new List<(string, string, string, string)>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
            events.Add((reader.GetString(0), reader.GetString(1), reader.GetString(2), reader.GetString(3)));
        return events;
    }

    public new async Task DisposeAsync()
    {
        await base.DisposeAsync();
        System.IO.Directory.Delete(Directory, recursive: true);
    }

    private sealed record ActiveDigest(string Digest);
}

[CollectionDefinition(Name)]
public sealed class PolicyDirectoryCollection : ICollectionFixture<PolicyDirectoryFixture>
{
    public const string Name = "policy-directory";
}
