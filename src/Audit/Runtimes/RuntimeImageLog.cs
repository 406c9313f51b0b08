using Marten;
using Npgsql;
using Sandbox.Audited.Audit.Runs;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Runtimes;

namespace Sandbox.Audited.Audit.Runtimes;

/// <summary>A bill of materials as stored: its digest ("sha256:" + hex of the exact bytes), media type and content.</summary>
public sealed record StoredSbom(string Digest, string Format, string Content);

public sealed class SbomIntegrityException(string message) : Exception(message);

/// <summary>
/// The runtime images this installation has used: each recorded once on the shared, hash-chained runtimes stream
/// (RuntimeImageRecorded), its SBOM stored by digest in sandbox.runtime_sboms before the event names it.
/// </summary>
public sealed class RuntimeImageLog(IDocumentStore store, NpgsqlDataSource dataSource)
{
    public const string SpdxJson = "application/spdx+json";

    private static readonly WriteContext Context = new("system:runtimes", null);

    public async Task<IReadOnlyList<RuntimeImageRecorded>> RecordedAsync(CancellationToken ct)
    {
        await using var session = store.QuerySession();
        var events = await session.Events.FetchStreamAsync(RuntimeImageStream.StreamId, token: ct);
        return events.Select(e => e.Data).OfType<RuntimeImageRecorded>().ToList();
    }

    /// <summary>Stores the SBOM (if any) first, so that every digest an event names can be read back; then appends.</summary>
    public async Task RecordAsync(RuntimeImageRecorded recorded, string? sbom, CancellationToken ct)
    {
        if (sbom is not null && recorded.SbomDigest is { } digest)
            await SaveSbomAsync(digest, sbom, ct);
        await RunStream.AppendSharedAsync(store, RuntimeImageStream.StreamId, Context, recorded, ct);
    }

    public async Task<StoredSbom?> FindSbomAsync(string digest, CancellationToken ct)
    {
        await using var select = dataSource.CreateCommand(
            $"SELECT format, content FROM {MartenSetup.Schema}.runtime_sboms WHERE digest = $1");
        select.Parameters.AddWithValue(digest);
        await using var reader = await select.ExecuteReaderAsync(ct);
        if (!await reader.ReadAsync(ct))
            return null;
        var sbom = new StoredSbom(digest, reader.GetString(0), reader.GetString(1));
        if (DigestOf(sbom.Content) != digest)
            throw new SbomIntegrityException($"The SBOM stored under {digest} hashes to {DigestOf(sbom.Content)}.");
        return sbom;
    }

    public static string DigestOf(string content) => "sha256:" + Sha256Hex.Of(content);

    private async Task SaveSbomAsync(string digest, string content, CancellationToken ct)
    {
        if (DigestOf(content) != digest)
            throw new SbomIntegrityException($"The SBOM to be stored under {digest} hashes to {DigestOf(content)}.");
        await using var insert = dataSource.CreateCommand(
            $"INSERT INTO {MartenSetup.Schema}.runtime_sboms (digest, format, content) VALUES ($1, $2, $3) ON CONFLICT (digest) DO NOTHING");
        insert.Parameters.AddWithValue(digest);
        insert.Parameters.AddWithValue(SpdxJson);
        insert.Parameters.AddWithValue(content);
        await insert.ExecuteNonQueryAsync(ct);
    }
}
