using System.Text.Json;
using System.Threading.Channels;
using Npgsql;
using NpgsqlTypes;
using Serilog.Core;
using Serilog.Events;

namespace Sandbox.Audited.Audit.Logging;

/// <summary>
/// Serilog → sandbox.logs. Emit only offers the event to a bounded queue and returns: it never blocks a
/// request, and when the queue is full the event is dropped and counted. A background loop writes batches
/// with binary COPY; a batch that cannot be written (log database down, bad connection string) is dropped
/// and counted too, so a failing log database never fails or slows a run. The events are the audit record;
/// these are operational logs.
/// </summary>
public sealed class PostgresLogSink : ILogEventSink, IAsyncDisposable
{
    private const int BatchSize = 500;
    private readonly Channel<LogEvent> _queue;
    private readonly NpgsqlDataSource _database;
    private readonly string _node;
    private readonly Task _writer;
    private readonly CancellationTokenSource _stop = new();
    private long _written;
    private long _dropped;
    private long _failed;

    public PostgresLogSink(string connectionString, string node, int queueLimit = 10_000)
    {
        _database = NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(connectionString) { Timeout = 5, CommandTimeout = 10 }.ConnectionString);
        _node = node;
        _queue = Channel.CreateBounded<LogEvent>(new BoundedChannelOptions(queueLimit)
        {
            FullMode = BoundedChannelFullMode.Wait, SingleReader = true, SingleWriter = false,
        });
        _writer = Task.Run(WriteLoopAsync);
    }

    /// <summary>Rows written to the table.</summary>
    public long Written => Interlocked.Read(ref _written);

    /// <summary>Events dropped because the queue was full.</summary>
    public long Dropped => Interlocked.Read(ref _dropped);

    /// <summary>Events lost because their batch could not be written.</summary>
    public long Failed => Interlocked.Read(ref _failed);

    public void Emit(LogEvent logEvent)
    {
        if (!_queue.Writer.TryWrite(logEvent))
            Interlocked.Increment(ref _dropped);
    }

    private async Task WriteLoopAsync()
    {
        var batch = new List<LogEvent>(BatchSize);
        try
        {
            while (await _queue.Reader.WaitToReadAsync(_stop.Token))
            {
                while (batch.Count < BatchSize && _queue.Reader.TryRead(out var e))
                    batch.Add(e);
                await WriteAsync(batch);
                batch.Clear();
            }
        }
        catch (OperationCanceledException)
        {
        }
        // Shutting down: one last attempt for what is still queued.
        while (_queue.Reader.TryRead(out var e))
            batch.Add(e);
        if (batch.Count > 0)
            await WriteAsync(batch);
    }

    private async Task WriteAsync(List<LogEvent> batch)
    {
        try
        {
            await using var connection = await _database.OpenConnectionAsync();
            await using var importer = await connection.BeginBinaryImportAsync(
                "COPY sandbox.logs (at, level, message, template, exception, run_id, correlation_id, source, node, properties) FROM STDIN (FORMAT BINARY)");
            foreach (var e in batch)
            {
                await importer.StartRowAsync();
                await importer.WriteAsync(e.Timestamp.UtcDateTime, NpgsqlDbType.TimestampTz);
                await importer.WriteAsync(e.Level.ToString(), NpgsqlDbType.Text);
                await importer.WriteAsync(e.RenderMessage(), NpgsqlDbType.Text);
                await importer.WriteAsync(e.MessageTemplate.Text, NpgsqlDbType.Text);
                await WriteNullableAsync(importer, e.Exception?.ToString(), NpgsqlDbType.Text);
                if (Scalar(e, "RunId") is { } run && Guid.TryParse(run, out var runId))
                    await importer.WriteAsync(runId, NpgsqlDbType.Uuid);
                else
                    await importer.WriteNullAsync();
                await WriteNullableAsync(importer, Scalar(e, "CorrelationId") ?? e.TraceId?.ToHexString(), NpgsqlDbType.Text);
                await WriteNullableAsync(importer, Scalar(e, "SourceContext"), NpgsqlDbType.Text);
                await importer.WriteAsync(_node, NpgsqlDbType.Text);
                await importer.WriteAsync(Properties(e), NpgsqlDbType.Jsonb);
            }
            await importer.CompleteAsync();
            Interlocked.Add(ref _written, batch.Count);
        }
        catch (Exception)
        {
            Interlocked.Add(ref _failed, batch.Count);
        }
    }

    private static async Task WriteNullableAsync(NpgsqlBinaryImporter importer, string? value, NpgsqlDbType type)
    {
        if (value is null) await importer.WriteNullAsync();
        else await importer.WriteAsync(value, type);
    }

    private static string? Scalar(LogEvent e, string name) =>
        e.Properties.TryGetValue(name, out var value) && value is ScalarValue { Value: { } v } ? v.ToString() : null;

    private static string Properties(LogEvent e)
    {
        var properties = new Dictionary<string, string>(e.Properties.Count);
        foreach (var (key, value) in e.Properties)
            properties[key] = value is ScalarValue { Value: string s } ? s : value.ToString();
        return JsonSerializer.Serialize(properties);
    }

    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await Task.WhenAny(_writer, Task.Delay(TimeSpan.FromSeconds(5)));
        await _stop.CancelAsync();
        await _database.DisposeAsync();
        _stop.Dispose();
    }
}
