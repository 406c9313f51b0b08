using Npgsql;

namespace Sandbox.Audited.Audit;

/// <summary>
/// Connections with Npgsql's automatic preparation, for the run path's commits and reads (GroupCommit, RunStream) only: each
/// statement is parsed and planned once per connection, and a connection given back to the pool keeps its prepared statements
/// and the plans of the functions they call (the event append), instead of DISCARD ALL dropping them at every return.
/// </summary>
/// <remarks>
/// Only where every failure passes through <see cref="AfterFailure"/>. Npgsql 10.0.3 keeps a statement that the server refused
/// while binding it (a parameter the plan cannot take: an invalid uuid or jsonb, a division by zero folded into the plan, a
/// value too long), in the round trip that prepared it, as prepared without its row description: the next execution of that
/// statement on that connection reads rows it does not expect ("Received unexpected backend message DataRow", which broke
/// a commit in the cluster tests when Marten's own connections were prepared) and the connection breaks. An error raised
/// while the statement runs (a function's RAISE, a duplicate key) leaves it intact. Marten's own connections, used by code
/// that does not clean up after a failure, are not prepared.
/// </remarks>
public static class Prepared
{
    /// <summary>Room for every statement the run path repeats; a new statement evicts the least used one.</summary>
    public const int MaxStatements = 64;

    /// <summary>The connection string with automatic preparation, unless it configures its own (`Max Auto Prepare=0` turns it off).</summary>
    public static string ConnectionString(string connectionString)
    {
        var builder = new NpgsqlConnectionStringBuilder(connectionString);
        // Npgsql's own builder answers ContainsKey for every keyword it knows, set or not: the string itself is asked.
        if (!Names(connectionString, "Max Auto Prepare"))
            builder.MaxAutoPrepare = MaxStatements;
        // These statements run once or twice per checkout: prepared from their second use on a connection.
        if (!Names(connectionString, "Auto Prepare Min Usages"))
            builder.AutoPrepareMinUsages = 2;
        // No reset round trip at every return to the pool: these connections leave nothing on the session (transactions and
        // transaction-scoped locks only; no LISTEN, SET, cursor or temporary table).
        if (!Names(connectionString, "No Reset On Close"))
            builder.NoResetOnClose = true;
        return builder.ConnectionString;
    }

    /// <summary>
    /// After a commit or read on connection (from source) failed: unless the failure is one the server raises while executing
    /// (a refusal the run path expects), the statements prepared on it are forgotten, since one refused while it was being
    /// bound in the round trip that prepared it is left without its row description. Marten gives a connection back to the
    /// pool when its commit fails, so such a connection is dropped from the pool (every idle one with it, rarely).
    /// </summary>
    public static void AfterFailure(NpgsqlDataSource source, NpgsqlConnection connection, Exception failure)
    {
        if (RaisedWhileExecuting(failure))
            return;
        try
        {
            if (connection.State == System.Data.ConnectionState.Open)
            {
                connection.UnprepareAll();
                return;
            }
        }
        catch (Exception)
        {
            // in a transaction that failed, or broken: the pool is cleared
        }
        source.Clear();
    }

    // A tenant at its ceiling (SBX01) and a stream version conflict (MT003) are raised by functions as they run, and a duplicate
    // key as a row is inserted: never while the statement is bound, so the statement was prepared with its description.
    private static bool RaisedWhileExecuting(Exception? e)
    {
        for (; e is not null; e = e.InnerException)
            if (e is PostgresException { SqlState: "SBX01" or "MT003" or PostgresErrorCodes.UniqueViolation })
                return true;
        return false;
    }

    private static bool Names(string connectionString, string keyword)
    {
        var given = new System.Data.Common.DbConnectionStringBuilder { ConnectionString = connectionString };
        return given.Keys.Cast<string>().Any(k => string.Equals(k.Replace(" ", "", StringComparison.Ordinal), keyword.Replace(" ", "", StringComparison.Ordinal),
            StringComparison.OrdinalIgnoreCase));
    }
}
