using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.OpenApi;
using Microsoft.OpenApi;
using Sandbox.Audited.Api.Policies;
using Sandbox.Audited.Api.Runs;

namespace Sandbox.Audited.Api.Hosting;

/// <summary>
/// What the endpoints' signatures cannot say, written once for the OpenAPI document: an operation id and a summary
/// for users, query parameters, headers, every problem response with its possible types, media types of streams and
/// exports, and the JSON body of POST /v1/runs (read by hand so that unknown members can be refused).
/// </summary>
internal static partial class ApiContract
{
    public const string ProblemSchema = "Problem";

    private const string Runs = "POST v1/runs";

    private static readonly Dictionary<string, Operation> Operations = new(StringComparer.Ordinal)
    {
        [Runs] = new("createRun", "Run code in a sandbox",
            "Runs the code and, with `wait` (default true), answers with the result; `wait: false` answers 202 at once with `Location`. " +
            "Every request, refused or not, is recorded.",
            [Bad, Auth, Forbid(Problems.Forbidden, Problems.PolicyDenied), Status(413, Problems.PayloadTooLarge), Status(422, Problems.IdempotencyConflict),
             Status(429, Problems.RateLimited, Problems.CapacityExceeded), Status(503, Problems.AuditUnavailable, Problems.SandboxUnavailable)],
            Headers: [Header("Idempotency-Key", "Makes a retry safe: the same key and body within the retention answer with the same run instead of running again.")]),
        ["GET v1/runs/{id}"] = new("getRun", "Get a run", "The run's status, result, output and the policy decision (owner or auditor).", [Auth, Missing, StoreAway]),
        ["GET v1/runs/{id}/events"] = new("getRunEvents", "Get a run's event history", "Every recorded event of the run with its hash and the previous event's hash.", [Auth, Missing, StoreAway]),
        ["GET v1/runs/{id}/stream"] = new("streamRun", "Stream a run (server-sent events)",
            "What is recorded so far, then lifecycle steps and output chunks as they happen, then `end`. Each message's id resumes the stream " +
            "through `Last-Event-ID`; after `end` a resumed request answers 204.",
            [Status(400, Problems.InvalidRequest), Auth, Missing, StoreAway],
            Headers: [Header("Last-Event-ID", "The id of the last message received; the stream continues after it (sent by EventSource clients when they reconnect).")]),
        ["GET v1/runs/{id}/artifacts"] = new("listRunArtifacts", "List a run's artifacts",
            "What the program wrote under out/: stored files with size, SHA-256 and media type, and what was skipped or over a cap, with why.", [Auth, Missing, StoreAway]),
        ["GET v1/runs/{id}/artifacts/{name}"] = new("getRunArtifact", "Download an artifact",
            "The stored file, with its digest in `Repr-Digest` (RFC 9530); 410 when its content was erased under a retention rule.",
            [Auth, Missing, Status(410, Problems.NotFound), StoreAway]),
        ["GET v1/runs/{id}/evidence"] = new("getRunEvidence", "Download a run's evidence bundle",
            "One tar holding the run's events, code, inputs, outputs, artifacts (or their erasure events), the policy bundle, the runtime's SBOM, " +
            "the inclusion proof of every event up to a signed checkpoint (taken first when none covers the run yet), the checkpoint keys and a manifest; " +
            "checked offline by sbx-verify --bundle with the key you hold. 503 with Retry-After when no checkpoint can be taken now.",
            [Auth, Missing, Status(503, Problems.AuditUnavailable)]),
        ["POST v1/runs/{id}/reproduce"] = new("reproduceRun", "Reproduce a run",
            "Runs the recorded code and inputs again on the recorded image under today's policy, as a new run linked to the original, and compares the outputs by digest.",
            [Auth, Forbid(Problems.Forbidden, Problems.PolicyDenied), Missing, Status(409, ReproduceEndpoints.NotReproducible),
             Status(429, Problems.RateLimited, Problems.CapacityExceeded), Status(503, Problems.AuditUnavailable, Problems.SandboxUnavailable)]),
        ["GET v1/runtimes/{id}/sbom"] = new("getRuntimeSbom", "Get a runtime's bill of materials", "The SPDX 2.3 SBOM of the runtime's current image.",
            [Auth, Missing, Status(503, Problems.AuditUnavailable, Problems.SandboxUnavailable)]),
        ["GET v1/runtimes/sboms/{digest}"] = new("getSbomByDigest", "Get a bill of materials by digest", "The SPDX 2.3 SBOM a run's events name by its digest (`sha256:<hex>` or the bare hex).", [Auth, Missing, StoreAway]),
        ["GET v1/audit/evidence/verify"] = new("verifyEvidence", "Verify stored evidence",
            "Rehashes every stored content (code, inputs, outputs, artifacts) a run or the tenant references: intact, erased, changed or missing.",
            AuditProblems, [Tenant, Uuid("runId", "One run.")]),
        ["GET v1/audit/proofs/inclusion"] = new("getInclusionProof", "Get inclusion proofs",
            "The leaf index and RFC 9162 audit path of an event (by sequence) or of every event of a run, in the tenant's tree of the given size (default: the latest checkpoint's).",
            [Bad, Auth, Forbid(Problems.Forbidden), Missing, Status(503, Problems.AuditUnavailable)],
            [Tenant, Int64("sequence", "An event's global sequence."), Uuid("runId", "A run: proofs of all its events."), Int64("treeSize", "The tree size (default: the latest checkpoint's).")]),
        ["GET v1/audit/proofs/consistency"] = new("getConsistencyProof", "Get a consistency proof",
            "The RFC 9162 proof that the tenant's tree of `second` leaves extends the one of `first` leaves.",
            [Bad, Auth, Forbid(Problems.Forbidden), Missing, Status(503, Problems.AuditUnavailable)],
            [Tenant, Int64("first", "The earlier tree size."), Int64("second", "The later tree size.")]),
        ["GET v1/runtimes"] = new("listRuntimes", "List the runtimes", "Languages, their images and image ids, and how many warm sandboxes wait.", [Auth]),
        ["GET v1/policies"] = new("getActivePolicy", "Get the active policy bundle", "Its digest, files and rules (auditor or admin).", [Auth, Forbid(Problems.Forbidden)]),
        ["GET v1/policies/bundles/{digest}"] = new("getPolicyBundle", "Get a stored policy bundle", "The files of a bundle by its digest, as any recorded decision names it.", [Auth, Forbid(Problems.Forbidden), Missing, StoreAway]),
        ["POST v1/policies/evaluate"] = new("evaluatePolicy", "Dry-run a policy decision", "Decides the given input without running anything; recorded only in the access log.",
            [Bad, Auth, Forbid(Problems.Forbidden), NotJson, StoreAway]),
        ["POST v1/policies/reload"] = new("reloadPolicies", "Reload the policy bundle", "Re-reads the policy directory now (admin); an invalid bundle is refused and the active one stays.",
            [Auth, Forbid(Problems.Forbidden), Status(422, PolicyEndpoints.PolicyInvalid)]),
        ["GET v1/audit/runs/{id}/replay"] = new("replayRunDecision", "Re-decide a recorded run", "Decides the run's recorded input again under the bundle that decided it.",
            [Auth, Forbid(Problems.Forbidden), Missing, Status(409, PolicyEndpoints.NotReplayable), StoreAway]),
        ["GET v1/audit/runs"] = new("queryAuditRuns", "Query runs", "Runs of the caller's tenant, filtered and cursor-paged (auditor or admin).", AuditProblems,
            [Tenant, Text("subject", "Who ran it (`sub`)."), Text("language", "python, javascript or shell."), Text("status", "Terminal status, or `running`."),
             Text("decision", "The policy decision: allow or deny."), Text("codeSha256", "SHA-256 of the code, hex."), From, To, Limit, Cursor]),
        ["GET v1/audit/events"] = new("queryAuditEvents", "Query events", "Events of the caller's tenant, filtered and cursor-paged (auditor or admin).", AuditProblems,
            [Tenant, Text("type", "Event type, e.g. run_completed."), Text("subject", "Who caused it (`sub`)."), From, To, Limit, Cursor]),
        ["GET v1/audit/verify"] = new("verifyAuditTrail", "Verify the hash chains", "Recomputes the hashes over a run, a sequence range, a time range or the whole tenant and reports the first broken link.",
            [.. AuditProblems, Missing], [Tenant, Uuid("runId", "One run."), Int64("fromSequence", "First global sequence."), Int64("toSequence", "Last global sequence."), From, To,
                Bool("sinceCheckpoint", "`true`: only what was written after the last checkpoint, each touched stream resumed from the leaf the checkpoint committed (no other scope).")]),
        ["GET v1/audit/export"] = new("exportAuditEvents", "Export events", "The events as NDJSON (one JSON object a line) or CSV (`data` as JSON text), streamed.",
            AuditProblems, [Tenant, Format, Text("type", "Event type."), Text("subject", "Who caused it (`sub`)."), From, To]),
        ["POST v1/audit/checkpoints"] = new("createCheckpoint", "Take a checkpoint", "Records a signed tree head over everything of the tenant committed so far; keep a copy of it.", AuditProblems),
        ["GET v1/audit/checkpoints"] = new("listCheckpoints", "List checkpoints", "The tenant's recorded checkpoints, oldest first.", AuditProblems, [Tenant]),
        ["GET v1/audit/checkpoints/verify"] = new("verifyCheckpoints", "Verify checkpoints",
            "Recomputes every recorded checkpoint from the events as stored; or, given toSequence, treeSize and rootHash, a head you kept.",
            AuditProblems, [Tenant, Int64("toSequence", "The kept head's last sequence."), Int64("treeSize", "The kept head's tree size."), Text("rootHash", "The kept head's root hash, hex.")]),
        ["GET v1/audit/checkpoints/key"] = new("getCheckpointKey", "Get the checkpoint signing key", "The public key that signs checkpoints, to check a kept head offline; 404 when heads are not signed.",
            [Auth, Forbid(Problems.Forbidden), Missing]),
        ["GET v1/dev"] = new("getDevelopmentSignIn", "Development sign-in settings", "Which roles a development token may carry and for how long (development auth mode only).",
            [Forbid(Problems.Forbidden)]),
        ["POST v1/dev/token"] = new("createDevelopmentToken", "Get a development token", "Mints a short-lived token signed with the local key (development auth mode only).",
            [Bad, Forbid(Problems.Forbidden), NotJson, StoreAway]),
    };

    private static ProblemSet Bad => Status(400, Problems.InvalidRequest);

    private static ProblemSet Auth => Status(401, Problems.Unauthorized);

    private static ProblemSet Missing => Status(404, Problems.NotFound);

    // Any read of the record answers 503 while PostgreSQL is away (or when an access-logged read cannot be logged).
    private static ProblemSet StoreAway => Status(503, Problems.AuditUnavailable);

    private static ProblemSet NotJson => Status(415, Problems.UnsupportedMediaType);

    private static ProblemSet[] AuditProblems => [Bad, Auth, Forbid(Problems.Forbidden), Status(503, Problems.AuditUnavailable)];

    private static Query Tenant => Text("tenant", "Must be the caller's own tenant (the default); another tenant is 403.");

    private static Query From => new("from", "Inclusive start, ISO 8601.", JsonSchemaType.String, "date-time");

    private static Query To => new("to", "Exclusive end, ISO 8601.", JsonSchemaType.String, "date-time");

    private static Query Limit => new("limit", "Page size, 1–500 (default 100).", JsonSchemaType.Integer, "int32", Minimum: 1, Maximum: 500);

    private static Query Cursor => Text("cursor", "The previous page's `nextCursor`, as given.");

    private static Query Format => new("format", "ndjson (default) or csv.", JsonSchemaType.String, Enum: ["ndjson", "csv"]);

    private static Query Text(string name, string description) => new(name, description, JsonSchemaType.String);

    private static Query Bool(string name, string description) => new(name, description, JsonSchemaType.Boolean);

    private static Query Uuid(string name, string description) => new(name, description, JsonSchemaType.String, "uuid");

    private static Query Int64(string name, string description) => new(name, description, JsonSchemaType.Integer, "int64");

    private static HeaderParameter Header(string name, string description) => new(name, description);

    private static ProblemSet Status(int status, params string[] types) => new(status, types);

    private static ProblemSet Forbid(params string[] types) => new(403, types);

    public static void AddTo(OpenApiOptions options)
    {
        options.AddDocumentTransformer((document, _, _) =>
        {
            foreach (var server in document.Servers ?? [])
                server.Url = server.Url?.TrimEnd('/');
            document.Components ??= new OpenApiComponents();
            document.Components.Schemas ??= new Dictionary<string, IOpenApiSchema>();
            document.Components.Schemas[ProblemSchema] = new OpenApiSchema
            {
                Type = JsonSchemaType.Object,
                Description = "An RFC 9457 problem document. `type` is stable: act on it, not on `title` or `detail`.",
                Required = new HashSet<string> { "type", "title", "status" },
                Properties = new Dictionary<string, IOpenApiSchema>
                {
                    ["type"] = new OpenApiSchema { Type = JsonSchemaType.String, Description = "The kind of problem, e.g. `/problems/rate-limited`." },
                    ["title"] = new OpenApiSchema { Type = JsonSchemaType.String },
                    ["status"] = new OpenApiSchema { Type = JsonSchemaType.Integer, Format = "int32" },
                    ["detail"] = new OpenApiSchema { Type = JsonSchemaType.String, Description = "What went wrong and what to do about it." },
                    ["instance"] = new OpenApiSchema { Type = JsonSchemaType.String },
                    ["runId"] = new OpenApiSchema { Type = JsonSchemaType.String, Format = "uuid", Description = "The run the refusal was recorded under, when it was." },
                    ["errors"] = new OpenApiSchema { Type = JsonSchemaType.Array, Items = new OpenApiSchema { Type = JsonSchemaType.String } },
                    ["retryAfterSeconds"] = new OpenApiSchema { Type = JsonSchemaType.Integer, Format = "int32" },
                    ["traceId"] = new OpenApiSchema { Type = JsonSchemaType.String, Description = "The request's W3C trace id, to quote when reporting a problem." },
                },
            };
            return Task.CompletedTask;
        });

        options.AddOperationTransformer(async (operation, context, ct) =>
        {
            var key = $"{context.Description.HttpMethod} {RouteConstraint().Replace(context.Description.RelativePath?.TrimEnd('/') ?? "", "}").Replace("{**", "{", StringComparison.Ordinal)}";
            if (context.Description.ActionDescriptor.EndpointMetadata.OfType<IAllowAnonymous>().Any())
                operation.Security = [];
            if (!Operations.TryGetValue(key, out var contract))
                return;
            operation.OperationId = contract.Id;
            operation.Summary = contract.Summary;
            operation.Description = contract.Description;
            operation.Parameters ??= [];
            foreach (var query in contract.Query ?? [])
                operation.Parameters.Add(new OpenApiParameter
                {
                    Name = query.Name, In = ParameterLocation.Query, Description = query.Description,
                    Schema = new OpenApiSchema
                    {
                        Type = query.Type, Format = query.Format, Minimum = query.Minimum?.ToString(System.Globalization.CultureInfo.InvariantCulture),
                        Maximum = query.Maximum?.ToString(System.Globalization.CultureInfo.InvariantCulture),
                        Enum = query.Enum?.Select(v => (JsonNode)JsonValue.Create(v)!).ToList(),
                    },
                });
            foreach (var header in contract.Headers ?? [])
                operation.Parameters.Add(new OpenApiParameter { Name = header.Name, In = ParameterLocation.Header, Description = header.Description, Schema = new OpenApiSchema { Type = JsonSchemaType.String } });

            operation.Responses ??= new OpenApiResponses();
            foreach (var problems in contract.Problems)
                operation.Responses[problems.Status.ToString(System.Globalization.CultureInfo.InvariantCulture)] = ProblemResponse(problems, context.Document);

            if (key == Runs)
                await DescribeCreateRunAsync(operation, context, ct);
            else if (key == "GET v1/runs/{id}/stream")
                DescribeStream(operation);
            else if (key == "GET v1/audit/export")
                DescribeExport(operation);
            else if (key == "GET v1/runs/{id}/artifacts/{name}")
            {
                if (operation.Parameters.OfType<OpenApiParameter>().FirstOrDefault(p => p.Name == "name") is { } name)
                    name.Description = "The artifact's name as listed, percent-encoded once: `/` as `%2F` (or left as `/`), `%` as `%25`. " +
                        "The listing's `href` is this path already encoded.";
                DescribeDownload(operation, "*/*",
                    "The stored bytes: `Content-Type` is the artifact's media type as listed, `Repr-Digest` its SHA-256 (RFC 9530). Read them as bytes whatever the media type.", "Repr-Digest");
            }
            else if (key == "GET v1/runs/{id}/evidence")
                DescribeDownload(operation, "application/x-tar", "The evidence bundle (a POSIX tar).");
            else if (key == "POST v1/audit/checkpoints" && operation.Responses?.TryGetValue("201", out var created) == true && created is OpenApiResponse c)
                c.Headers = new Dictionary<string, IOpenApiHeader>
                {
                    ["Location"] = new OpenApiHeader { Required = true, Description = "The tenant's checkpoints.", Schema = new OpenApiSchema { Type = JsonSchemaType.String, Format = "uri-reference" } },
                };
        });

        // System.Text.Json's web defaults also read numbers from strings; the contract is numbers as numbers.
        options.AddSchemaTransformer((schema, _, _) =>
        {
            if (schema.Type is { } type && type.HasFlag(JsonSchemaType.String) && (type.HasFlag(JsonSchemaType.Integer) || type.HasFlag(JsonSchemaType.Number)))
            {
                schema.Type = type & ~JsonSchemaType.String;
                schema.Pattern = null;
            }
            return Task.CompletedTask;
        });
    }

    private static OpenApiResponse ProblemResponse(ProblemSet problems, OpenApiDocument? document)
    {
        var response = new OpenApiResponse
        {
            Description = string.Join(", ", problems.Types.Select(t => $"`{t}`")),
            Content = new Dictionary<string, OpenApiMediaType>
            {
                ["application/problem+json"] = new()
                {
                    Schema = new OpenApiSchema
                    {
                        AllOf =
                        [
                            new OpenApiSchemaReference(ProblemSchema, document),
                            new OpenApiSchema
                            {
                                Type = JsonSchemaType.Object,
                                Properties = new Dictionary<string, IOpenApiSchema>
                                {
                                    ["type"] = new OpenApiSchema { Type = JsonSchemaType.String, Enum = problems.Types.Select(t => (JsonNode)JsonValue.Create(t)!).ToList() },
                                },
                            },
                        ],
                    },
                },
            },
        };
        if (problems.Status is 429 or 503)
            response.Headers = new Dictionary<string, IOpenApiHeader> { ["Retry-After"] = RetryAfter() };
        if (problems.Status == 401)
            response.Headers = new Dictionary<string, IOpenApiHeader>
            {
                ["WWW-Authenticate"] = new OpenApiHeader { Description = "Bearer, with the reason when a token was sent.", Schema = new OpenApiSchema { Type = JsonSchemaType.String } },
            };
        return response;
    }

    private static OpenApiHeader RetryAfter() => new()
    {
        Description = "Seconds to wait before retrying.",
        Schema = new OpenApiSchema { Type = JsonSchemaType.Integer, Format = "int32", Minimum = "1" },
    };

    // What `curl -F` sends: the run's fields as text parts; every other part is an input file under its own name.
    private static OpenApiSchema MultipartRun()
    {
        static OpenApiSchema Text(string description) => new() { Type = JsonSchemaType.String, Description = description };
        return new OpenApiSchema
        {
            Type = JsonSchemaType.Object,
            Description = "The run as multipart/form-data: large and binary input files are streamed, never held whole.",
            Required = new HashSet<string> { "language", "code" },
            Properties = new Dictionary<string, IOpenApiSchema>
            {
                ["language"] = Text("python, javascript or shell."),
                ["runtime"] = Text("A runtime id from GET /v1/runtimes (default: the language's lean runtime)."),
                ["isolation"] = Text("standard or strong; policy may raise it, never lower it."),
                ["code"] = new OpenApiSchema { Type = JsonSchemaType.String, Format = "binary", Description = "The program, as a field or a file part." },
                ["stdin"] = new OpenApiSchema { Type = JsonSchemaType.String, Format = "binary", Description = "Standard input, as a field or a file part." },
                ["classification"] = Text("The data classification policy decides on."),
                ["limits"] = Text("The limits as a JSON object, e.g. {\"timeoutMs\":5000}."),
                ["args"] = Text("The arguments as a JSON array of strings."),
                ["wait"] = Text("true (default) or false."),
                ["callbackUrl"] = Text("Where the finished run is posted."),
            },
            AdditionalProperties = new OpenApiSchema { Type = JsonSchemaType.String, Format = "binary", Description = "An input file, named by its part's name." },
        };
    }

    private static async Task DescribeCreateRunAsync(OpenApiOperation operation, OpenApiOperationTransformerContext context, CancellationToken ct)
    {
        var body = await context.GetOrCreateSchemaAsync(typeof(RunRequestBody), null, ct);
        operation.RequestBody = new OpenApiRequestBody
        {
            Required = true,
            Description = "The run. Unknown members are refused (400).",
            Content = new Dictionary<string, OpenApiMediaType>
            {
                ["application/json"] = new() { Schema = body },
                ["multipart/form-data"] = new() { Schema = MultipartRun() },
            },
        };
        var replayed = new OpenApiHeader { Description = "`true` when an Idempotency-Key replayed an earlier run instead of running again.", Schema = new OpenApiSchema { Type = JsonSchemaType.String } };
        if (operation.Responses?.TryGetValue("202", out var accepted) == true && accepted is OpenApiResponse a)
        {
            a.Description = "Accepted: the run goes on (`wait: false`, or its outcome is still being recorded: `status` `recording`); poll `Location` or stream it.";
            a.Headers = new Dictionary<string, IOpenApiHeader>
            {
                ["Location"] = new OpenApiHeader { Required = true, Description = "The run: /v1/runs/{id}.", Schema = new OpenApiSchema { Type = JsonSchemaType.String, Format = "uri-reference" } },
                ["Idempotent-Replayed"] = replayed,
            };
        }
        if (operation.Responses?.TryGetValue("200", out var ok) == true && ok is OpenApiResponse o)
        {
            o.Description = "The run finished: succeeded, failed, timed out or over a limit (a run the policy denies answers 403 `policy-denied`).";
            o.Headers = new Dictionary<string, IOpenApiHeader> { ["Idempotent-Replayed"] = replayed };
        }
    }

    private static void DescribeStream(OpenApiOperation operation)
    {
        operation.Responses ??= new OpenApiResponses();
        operation.Responses["200"] = new OpenApiResponse
        {
            Description = "Server-sent events: one message per recorded event (`event` = its type), `sandbox_running`, `stdout`/`stderr` chunks " +
                "(`{bytes, text}` or `{bytes, base64}`), `output_erased` (`{stream, sha256, bytes, erasedAt, reason}`: the recorded output the client " +
                "was not sent live was erased under a retention rule, so the stream carries its digest and size only) and a final `end` " +
                "(`{runId, status, exitCode}`). Every message has an `id`; the first carries `retry`. A client that reads more slowly than the " +
                "run writes gets `fell_behind` (`{reason, lastEventId}`) instead, and the stream ends there without `end`: reconnect with " +
                "`Last-Event-ID` (an EventSource client does so by itself) and the stream goes on from there.",
            Content = new Dictionary<string, OpenApiMediaType>
            {
                ["text/event-stream"] = new() { Schema = new OpenApiSchema { Type = JsonSchemaType.String } },
            },
        };
        operation.Responses["204"] = new OpenApiResponse { Description = "`Last-Event-ID: end`: the stream already ended; a standard EventSource client stops." };
    }

    private static void DescribeDownload(OpenApiOperation operation, string mediaType, string description, params string[] headers)
    {
        operation.Responses ??= new OpenApiResponses();
        operation.Responses["200"] = new OpenApiResponse
        {
            Description = description,
            Content = new Dictionary<string, OpenApiMediaType> { [mediaType] = new() { Schema = new OpenApiSchema { Type = JsonSchemaType.String, Format = "binary" } } },
            Headers = headers.ToDictionary(h => h, h => (IOpenApiHeader)new OpenApiHeader { Required = true, Schema = new OpenApiSchema { Type = JsonSchemaType.String } }),
        };
    }

    private static void DescribeExport(OpenApiOperation operation)
    {
        operation.Responses ??= new OpenApiResponses();
        operation.Responses["200"] = new OpenApiResponse
        {
            Description = "The events, streamed: one per line (NDJSON) or row (CSV, with a header row).",
            Content = new Dictionary<string, OpenApiMediaType>
            {
                ["application/x-ndjson"] = new() { Schema = new OpenApiSchema { Type = JsonSchemaType.String } },
                ["text/csv"] = new() { Schema = new OpenApiSchema { Type = JsonSchemaType.String } },
            },
        };
    }

    [System.Text.RegularExpressions.GeneratedRegex(":[a-z]+}")]
    private static partial System.Text.RegularExpressions.Regex RouteConstraint();

    private sealed record Operation(string Id, string Summary, string Description, ProblemSet[] Problems, Query[]? Query = null, HeaderParameter[]? Headers = null);

    private sealed record ProblemSet(int Status, string[] Types);

    private sealed record Query(string Name, string Description, JsonSchemaType Type, string? Format = null, int? Minimum = null, int? Maximum = null, string[]? Enum = null);

    private sealed record HeaderParameter(string Name, string Description);
}
