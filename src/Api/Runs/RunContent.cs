using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Api.Runs;

/// <summary>
/// Puts stored content back where clients expect it: output events since the evidence store hold a digest and size,
/// and the API answers with the whole captured stream read from the tenant's store (erased content answers as
/// encoding "erased" with no content). Runs recorded before the store carry their content in the event already.
/// </summary>
public static class RunContent
{
    public static async Task<RunSummary> WithOutputAsync(this RunSummary run, EvidenceStore evidence, CancellationToken ct)
    {
        if (run.Output is not { } output || run.Tenant is not { } tenant || (!output.Stdout.Stored && !output.Stderr.Stored))
            return run;
        return run with
        {
            Output = output with
            {
                Stdout = await ResolveAsync(evidence, tenant, output.Stdout, ct),
                Stderr = await ResolveAsync(evidence, tenant, output.Stderr, ct),
            },
        };
    }

    public static async Task<StreamOutput> ResolveAsync(EvidenceStore evidence, string tenant, StreamOutput output, CancellationToken ct)
    {
        if (!output.Stored)
            return output;
        try
        {
            var bytes = await evidence.ReadPrefixAsync(tenant, output.Sha256, checked((int)output.Bytes), ct);
            return bytes is null
                ? output with { Encoding = "missing", Content = "" }
                : RunOrchestrator.Describe(bytes, output.ProducedBytes, output.Truncated) with { Stored = true };
        }
        catch (ContentErasedException)
        {
            return output with { Encoding = "erased", Content = "" };
        }
    }

    /// <summary>The bytes of an output: from the event when it holds them, else from the store (empty when erased).</summary>
    public static async Task<byte[]> BytesAsync(EvidenceStore evidence, string tenant, StreamOutput output, CancellationToken ct)
    {
        var whole = await ResolveAsync(evidence, tenant, output, ct);
        return whole.Encoding switch
        {
            "utf8" => System.Text.Encoding.UTF8.GetBytes(whole.Content),
            "base64" => Convert.FromBase64String(whole.Content),
            _ => [],
        };
    }
}
