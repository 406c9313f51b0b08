using System.Text.Json;
using Npgsql;
using NpgsqlTypes;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Policies;

namespace Sandbox.Audited.Audit.Policies;

/// <summary>A bundle's content as stored: its files in digest order, and when any node first stored it.</summary>
public sealed record StoredBundle(string Digest, IReadOnlyList<PolicyFile> Files, DateTimeOffset FirstSeenAt)
{
    /// <summary>The bundle rebuilt from storage; refuses content that no longer hashes to the digest it is stored under.</summary>
    public PolicyBundle ToBundle()
    {
        foreach (var file in Files.Where(f => Sha256Hex.Of(f.Content) != f.Sha256))
            throw new PolicyIntegrityException($"Stored policy file '{file.Path}' of bundle {Digest} does not hash to its recorded sha256.");
        var bundle = PolicyBundle.FromFiles(Files.Select(f => (f.Path, f.Content)).ToList());
        if (bundle.Digest != Digest)
            throw new PolicyIntegrityException($"The content stored under bundle digest {Digest} hashes to {bundle.Digest}.");
        return bundle;
    }
}

public sealed class PolicyIntegrityException(string message) : Exception(message);

/// <summary>
/// Content-addressed store of policy bundles (sandbox.policy_bundles): each bundle's files are stored once,
/// under their digest, so that any recorded decision can be read and replayed with its exact rules.
/// </summary>
public sealed class PolicyBundleStore(NpgsqlDataSource dataSource)
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    /// <summary>Stores the bundle unless its digest is already there, then checks what is stored under the digest.</summary>
    public async Task SaveAsync(PolicyBundle bundle, CancellationToken ct)
    {
        await using (var insert = dataSource.CreateCommand(
            $"INSERT INTO {MartenSetup.Schema}.policy_bundles (digest, files) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING"))
        {
            insert.Parameters.AddWithValue(bundle.Digest);
            insert.Parameters.Add(new NpgsqlParameter { Value = JsonSerializer.Serialize(bundle.Files, Json), NpgsqlDbType = NpgsqlDbType.Jsonb });
            await insert.ExecuteNonQueryAsync(ct);
        }
        var stored = await FindAsync(bundle.Digest, ct)
            ?? throw new PolicyIntegrityException($"Bundle {bundle.Digest} was stored but cannot be read back.");
        stored.ToBundle();
    }

    public async Task<StoredBundle?> FindAsync(string digest, CancellationToken ct)
    {
        await using var select = dataSource.CreateCommand(
            $"SELECT files::text, first_seen_at FROM {MartenSetup.Schema}.policy_bundles WHERE digest = $1");
        select.Parameters.AddWithValue(digest);
        await using var reader = await select.ExecuteReaderAsync(ct);
        if (!await reader.ReadAsync(ct))
            return null;
        var files = JsonSerializer.Deserialize<List<PolicyFile>>(reader.GetString(0), Json) ?? [];
        return new StoredBundle(digest, files, reader.GetFieldValue<DateTimeOffset>(1));
    }
}
