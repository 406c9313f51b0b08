namespace Sandbox.Audited.Domain.Runtimes;

public static class RuntimeImageStream
{
    /// <summary>The well-known stream every node appends the runtime images it first sees to.</summary>
    public static readonly Guid StreamId = new("5b0c7a1e-9d3f-4c2b-8e61-000000000002");
}

/// <summary>
/// A node saw a runtime image for the first time. LayerDigest is the diff id of its one root filesystem layer (what a
/// rebuild with the same package versions reproduces); SbomDigest names its SPDX bill of materials, stored once by
/// digest (sandbox.runtime_sboms). Null digests: the image carries no such label or its SBOM file was not found.
/// </summary>
public sealed record RuntimeImageRecorded(
    Guid StreamId,
    string RuntimeId,
    string Language,
    string Image,
    string ImageId,
    string? LayerDigest,
    string? SbomDigest,
    long SizeBytes,
    string Node,
    DateTimeOffset At);
