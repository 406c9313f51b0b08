using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Api.Policies;

/// <summary>
/// Reads and dry runs that leave no other trace (policy evaluation, replay) are recorded here.
/// MERGE NOTE: a stand-in for the audit branch's access-log event (AuditAccessed); the lead wires this
/// interface to it at merge, replacing <see cref="LoggingAccessLog"/>.
/// </summary>
public interface IAccessLog
{
    Task RecordAsync(Caller caller, string action, string resource, IReadOnlyDictionary<string, string?> details, CancellationToken ct);
}

/// <summary>Writes access records to the structured log until the access-log event exists.</summary>
public sealed partial class LoggingAccessLog(ILogger<LoggingAccessLog> logger) : IAccessLog
{
    public Task RecordAsync(Caller caller, string action, string resource, IReadOnlyDictionary<string, string?> details, CancellationToken ct)
    {
        LogAccess(caller.Subject, caller.Tenant, string.Join(",", caller.Roles), action, resource, details);
        return Task.CompletedTask;
    }

    [LoggerMessage(Level = LogLevel.Information,
        Message = "Access: {Subject} of {Tenant} ({Roles}) {Action} {Resource} {Details}")]
    private partial void LogAccess(string subject, string tenant, string roles, string action, string resource, IReadOnlyDictionary<string, string?> details);
}
