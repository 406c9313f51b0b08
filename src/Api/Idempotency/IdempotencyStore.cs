using System.Text.Json;
using System.Text.Json.Nodes;
using Npgsql;
using Polly;
using Polly.Retry;
using Sandbox.Audited.Audit;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Api.Idempotency;

/// <summary>What a key says about a request: run it (the key is now ours), it repeats a run, or it conflicts.</summary>
public abstract record IdempotencyClaim;

/// <summary>The key is this request's: Since identifies its claim, which binds the run only while nobody took the key over.</summary>
public sealed record NewClaim(string Key, DateTimeOffset Since) : IdempotencyClaim;

public sealed record ExistingRun(Guid RunId) : IdempotencyClaim;

public sealed record KeyConflict(string Detail) : IdempotencyClaim;

/// <summary>
/// Idempotency-Key on POST /v1/runs, per (tenant, subject, key): the same key with the same body finds the
/// run it started (nothing runs again); the same key with another body is a conflict. The body is compared
/// by the SHA-256 of its canonical JSON without `wait`, which only says how the client wants the answer.
/// A key is remembered for Idempotency:RetentionHours (default 24); after that the same key starts a new run. A claim whose
/// run is not recorded within Idempotency:ClaimTimeoutSeconds (default 60: its node was killed, or the store went away and the
/// claim could not be released) is taken over by the next request with the key; the late request's write-ahead commit then
/// binds nothing and is refused, so a key never names two runs.
/// </summary>
public sealed class IdempotencyStore(NpgsqlDataSource db, IConfiguration configuration)
{
    public const int MaxKeyLength = 255;
    private readonly int _retentionHours = Math.Max(1, configuration.GetValue("Idempotency:RetentionHours", 24));
    private readonly int _claimTimeoutSeconds = Math.Max(1, configuration.GetValue("Idempotency:ClaimTimeoutSeconds", 60));
    private static readonly TimeSpan PendingWait = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan PendingPoll = TimeSpan.FromMilliseconds(100);

    // Another request with the same key is still being recorded (no run yet, or it released the key in between): look again.
    private static readonly ResiliencePipeline<IdempotencyClaim?> WhilePending = new ResiliencePipelineBuilder<IdempotencyClaim?>()
        .AddRetry(new RetryStrategyOptions<IdempotencyClaim?>
        {
            ShouldHandle = new PredicateBuilder<IdempotencyClaim?>().HandleResult(claim => claim is null),
            MaxRetryAttempts = (int)(PendingWait / PendingPoll),
            BackoffType = DelayBackoffType.Constant,
            Delay = PendingPoll,
        })
        .Build();

    public static string BodyHash(ReadOnlySpan<byte> json)
    {
        var node = JsonNode.Parse(json) as JsonObject ?? throw new JsonException("The body is not a JSON object.");
        foreach (var name in node.Select(p => p.Key).Where(k => k.Equals("wait", StringComparison.OrdinalIgnoreCase)).ToList())
            node.Remove(name);
        return Sha256Hex.Of(JcsCanonicalizer.Canonicalize(node.ToJsonString()));
    }

    public async Task<IdempotencyClaim> ClaimAsync(Caller caller, string key, string bodyHash, Func<Guid, Task<bool>> mayRunAgain, CancellationToken ct) =>
        await WhilePending.ExecuteAsync(async token => await TryClaimAsync(caller, key, bodyHash, mayRunAgain, token), ct)
        ?? new KeyConflict($"A request with the Idempotency-Key '{key}' is still being recorded; retry shortly.");

    /// <summary>The key's claim, or null while another request holding it has not recorded its run yet.</summary>
    private async Task<IdempotencyClaim?> TryClaimAsync(Caller caller, string key, string bodyHash, Func<Guid, Task<bool>> mayRunAgain, CancellationToken ct)
    {
        // A key past its retention is claimed afresh, as if it had never been used; so is one whose claim never recorded its run
        // (a crash or an outage between the claim and the write-ahead commit): that request can no longer bind it.
        await using (var insert = db.CreateCommand($"""
            INSERT INTO {MartenSetup.Schema}.idempotency_keys (tenant, subject, key, request_sha256) VALUES ($1, $2, $3, $4)
            ON CONFLICT (tenant, subject, key) DO UPDATE SET request_sha256 = EXCLUDED.request_sha256, run_id = NULL, created_at = now()
            WHERE idempotency_keys.created_at < now() - make_interval(hours => $5)
               OR (idempotency_keys.run_id IS NULL AND idempotency_keys.created_at < now() - make_interval(secs => $6))
            RETURNING created_at
            """))
        {
            AddKey(insert, caller, key);
            insert.Parameters.AddWithValue(bodyHash);
            insert.Parameters.AddWithValue(_retentionHours);
            insert.Parameters.AddWithValue((double)_claimTimeoutSeconds);
            if (await insert.ExecuteScalarAsync(ct) is DateTime since)
                return new NewClaim(key, new DateTimeOffset(since)); // an offset, not a Kind: Marten's parameters refuse UTC DateTimes
        }

        string? storedHash = null;
        Guid? runId = null;
        await using (var select = db.CreateCommand($"SELECT request_sha256, run_id FROM {MartenSetup.Schema}.idempotency_keys WHERE tenant = $1 AND subject = $2 AND key = $3"))
        {
            AddKey(select, caller, key);
            await using var reader = await select.ExecuteReaderAsync(ct);
            if (await reader.ReadAsync(ct))
            {
                storedHash = reader.GetString(0);
                runId = reader.IsDBNull(1) ? null : reader.GetGuid(1);
            }
        }
        if (storedHash is null)
            return null; // released between our insert and select: try again
        if (storedHash != bodyHash)
            return new KeyConflict($"The Idempotency-Key '{key}' was already used with a different request body.");
        if (runId is { } existing)
        {
            // A run refused for capacity never ran: the key is handed to the retry.
            if (await mayRunAgain(existing) && await RebindAsync(caller, key, existing, ct) is { } since)
                return new NewClaim(key, since);
            return new ExistingRun(existing);
        }
        return null;
    }

    /// <summary>
    /// Binds the key to its run in the run's write-ahead commit: recorded together or not at all. A claim another request took
    /// over meanwhile binds nothing, and the commit is refused (SQLSTATE 22012): the run is not recorded, so it never runs.
    /// </summary>
    public static void AttachRun(Marten.IDocumentSession session, Caller caller, NewClaim claim, Guid runId) =>
        session.QueueSqlCommand($"""
            WITH bound AS (UPDATE {MartenSetup.Schema}.idempotency_keys SET run_id = ?
                           WHERE tenant = ? AND subject = ? AND key = ? AND run_id IS NULL AND created_at = ? RETURNING 1)
            SELECT 1 / count(*)::int FROM bound
            """, runId, caller.Tenant, caller.Subject, claim.Key, claim.Since);

    /// <summary>The request was not recorded (nothing ran): the key is free again, unless another request took it over.</summary>
    public async Task ReleaseAsync(Caller caller, NewClaim claim)
    {
        await using var delete = db.CreateCommand(
            $"DELETE FROM {MartenSetup.Schema}.idempotency_keys WHERE tenant = $1 AND subject = $2 AND key = $3 AND run_id IS NULL AND created_at = $4");
        AddKey(delete, caller, claim.Key);
        delete.Parameters.AddWithValue(claim.Since);
        await delete.ExecuteNonQueryAsync(CancellationToken.None);
    }

    private async Task<DateTimeOffset?> RebindAsync(Caller caller, string key, Guid previous, CancellationToken ct)
    {
        await using var update = db.CreateCommand(
            $"UPDATE {MartenSetup.Schema}.idempotency_keys SET run_id = NULL, created_at = now() WHERE tenant = $1 AND subject = $2 AND key = $3 AND run_id = $4 RETURNING created_at");
        AddKey(update, caller, key);
        update.Parameters.AddWithValue(previous);
        return await update.ExecuteScalarAsync(ct) is DateTime since ? new DateTimeOffset(since) : null;
    }

    private static void AddKey(NpgsqlCommand command, Caller caller, string key)
    {
        command.Parameters.AddWithValue(caller.Tenant);
        command.Parameters.AddWithValue(caller.Subject);
        command.Parameters.AddWithValue(key);
    }
}
