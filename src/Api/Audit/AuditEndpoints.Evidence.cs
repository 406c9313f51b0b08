using Microsoft.AspNetCore.Http.HttpResults;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Audit.Trail;
using Sandbox.Audited.Domain.Audit;

namespace Sandbox.Audited.Api.Audit;

public static partial class AuditEndpoints
{
    /// <summary>
    /// GET /v1/audit/evidence/verify[?runId=]: rehashes every stored content the tenant's (or one run's) events reference.
    /// verified is false when content changed or is missing; erased content is listed as erased and does not fail it.
    /// </summary>
    public static async Task<Results<Ok<EvidenceReport>, ProblemHttpResult>> VerifyEvidence(
        HttpContext http, EvidenceVerification verification, AccessLog accessLog, CancellationToken ct)
    {
        var q = new Query(http);
        var caller = http.User.ToCaller();
        var tenant = q.Tenant(caller);
        var runId = q.Guid("runId");
        if (q.Error is not null)
            return await q.RefusedAsync(accessLog, caller, AuditActions.VerifyEvidence);

        var report = await verification.VerifyAsync(tenant, runId, ct);
        if (await RecordAsync(http, accessLog, caller, AuditActions.VerifyEvidence, report.Checked) is { } unrecorded)
            return unrecorded;
        return TypedResults.Ok(report);
    }
}
