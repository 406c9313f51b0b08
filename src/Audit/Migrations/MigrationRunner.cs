using System.Security.Cryptography;
using System.Text;
using Npgsql;

namespace Sandbox.Audited.Audit.Migrations;

/// <summary>
/// Applies migrations/NNNN_name.sql in order, each in its own transaction, and records what it applied.
/// A file that was applied and later edited is refused: migrations are append-only, like the events.
/// </summary>
public static class MigrationRunner
{
    public static async Task<IReadOnlyList<string>> ApplyAsync(string adminConnectionString, string directory, TextWriter log, CancellationToken ct)
    {
        var files = Directory.GetFiles(directory, "*.sql").OrderBy(Path.GetFileName, StringComparer.Ordinal).ToList();
        if (files.Count == 0)
            throw new InvalidOperationException($"No migrations found in {directory}.");

        await using var connection = new NpgsqlConnection(adminConnectionString);
        await connection.OpenAsync(ct);
        await Execute(connection, null, """
            CREATE TABLE IF NOT EXISTS public.sbx_schema_migrations (
                name text PRIMARY KEY,
                sha256 text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())
            """, ct);
        // One migrator at a time, even when several nodes start together.
        await Execute(connection, null, "SELECT pg_advisory_lock(727274)", ct);

        var applied = new List<string>();
        try
        {
            var done = new Dictionary<string, string>();
            await using (var command = new NpgsqlCommand("SELECT name, sha256 FROM public.sbx_schema_migrations", connection))
            await using (var reader = await command.ExecuteReaderAsync(ct))
                while (await reader.ReadAsync(ct))
                    done[reader.GetString(0)] = reader.GetString(1);

            foreach (var file in files)
            {
                var name = Path.GetFileName(file);
                var sql = await File.ReadAllTextAsync(file, ct);
                var sha = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(sql)));
                if (done.TryGetValue(name, out var appliedSha))
                {
                    if (appliedSha != sha)
                        throw new InvalidOperationException($"Migration {name} was changed after it was applied; add a new migration instead.");
                    continue;
                }

                await using var tx = await connection.BeginTransactionAsync(ct);
                await Execute(connection, tx, sql, ct);
                await Execute(connection, tx, "RESET ROLE", ct);
                await using (var insert = new NpgsqlCommand("INSERT INTO public.sbx_schema_migrations (name, sha256) VALUES ($1, $2)", connection, tx))
                {
                    insert.Parameters.AddWithValue(name);
                    insert.Parameters.AddWithValue(sha);
                    await insert.ExecuteNonQueryAsync(ct);
                }
                await tx.CommitAsync(ct);
                applied.Add(name);
                await log.WriteLineAsync($"applied {name}");
            }
        }
        finally
        {
            await Execute(connection, null, "SELECT pg_advisory_unlock(727274)", CancellationToken.None);
        }
        return applied;
    }

    private static async Task Execute(NpgsqlConnection connection, NpgsqlTransaction? tx, string sql, CancellationToken ct)
    {
        await using var command = new NpgsqlCommand(sql, connection, tx);
        await command.ExecuteNonQueryAsync(ct);
    }
}
