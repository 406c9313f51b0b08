using System.Diagnostics;

namespace Sandbox.Audited.Tests.Infrastructure;

/// <summary>Reading a run's server-sent events as a client does, with when each message arrived.</summary>
public static class ServerSentEvents
{
    /// <summary>Reads messages (event name, data) until the `end` message, each stamped with clock's elapsed time on arrival.</summary>
    public static async Task<List<(TimeSpan At, string Event, string Data)>> ReadUntilEndAsync(HttpResponseMessage response, Stopwatch clock)
    {
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var received = new List<(TimeSpan At, string Event, string Data)>();
        var name = "message";
        while (await reader.ReadLineAsync() is { } line && !received.Any(r => r.Event == "end"))
        {
            if (line.StartsWith("event: ", StringComparison.Ordinal))
                name = line["event: ".Length..];
            else if (line.StartsWith("data: ", StringComparison.Ordinal))
                received.Add((clock.Elapsed, name, line["data: ".Length..]));
        }
        return received;
    }
}
