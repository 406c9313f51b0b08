using System.Globalization;

namespace Sandbox.Audited.Api.Streaming;

/// <summary>
/// Where a client is in a run's stream, sent as every message's SSE id and read back from Last-Event-ID: the last
/// recorded event's version, the stdout and stderr bytes delivered, and whether sandbox_running was sent. Byte
/// offsets rather than chunk numbers, so a resume is exact whether output comes live or from the recorded events.
/// The final `end` message has the id <see cref="End"/>.
/// </summary>
public sealed record StreamCursor(long Version, long Stdout, long Stderr, bool Running)
{
    public const string End = "end";

    public static readonly StreamCursor Start = new(0, 0, 0, false);

    public string Id => string.Create(CultureInfo.InvariantCulture, $"{Version}-{Stdout}-{Stderr}-{(Running ? 1 : 0)}");

    public static bool TryParse(string? id, out StreamCursor cursor)
    {
        cursor = Start;
        var parts = id?.Split('-');
        if (parts is not { Length: 4 }
            || !long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var version)
            || !long.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var stdout)
            || !long.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out var stderr)
            || parts[3] is not ("0" or "1"))
            return false;
        cursor = new StreamCursor(version, stdout, stderr, parts[3] == "1");
        return true;
    }
}
