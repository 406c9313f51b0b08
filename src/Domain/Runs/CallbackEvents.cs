namespace Sandbox.Audited.Domain.Runs;

/// <summary>
/// One attempt to POST a finished run's result to the client's callbackUrl. Recorded after the terminal event
/// (like SandboxRemoved): StatusCode is the receiver's answer, Error what went wrong when there was none.
/// </summary>
public sealed record CallbackAttempted(Guid RunId, string Url, int Attempt, int? StatusCode, string? Error, bool Delivered, DateTimeOffset At);
