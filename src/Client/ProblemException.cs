using System.Net;
using System.Text.Json;

namespace Sandbox.Audited.Client;

/// <summary>
/// The service answered with an RFC 9457 problem. <see cref="Type"/> is stable (for example
/// "/problems/invalid-request", "/problems/policy-denied", "/problems/rate-limited"): branch on it, not on the text.
/// </summary>
public sealed class ProblemException(HttpStatusCode status, string? type, string? title, string? detail, Guid? runId,
    IReadOnlyList<string> errors, TimeSpan? retryAfter, JsonElement? body)
    : Exception($"{(int)status} {title ?? status.ToString()}: {detail}")
{
    public HttpStatusCode Status => status;

    public string? Type => type;

    public string? Title => title;

    public string? Detail => detail;

    /// <summary>The run under which the service recorded this refusal, when it recorded one.</summary>
    public Guid? RunId => runId;

    public IReadOnlyList<string> Errors => errors;

    /// <summary>From the Retry-After header of a 429 or 503: when trying again makes sense.</summary>
    public TimeSpan? RetryAfter => retryAfter;

    /// <summary>The whole problem document, for members this client does not model (reasons, ruleIds, ...).</summary>
    public JsonElement? Body => body;
}
