using Docker.DotNet;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Executor.Sandboxes;

/// <summary>A created, started sandbox whose supervisor said "ready". It serves one run, then it is destroyed.</summary>
public sealed class PreparedSandbox(
    string containerId,
    SandboxProfile profile,
    string image,
    string imageId,
    SandboxSettings settings,
    MultiplexedStream stream,
    FrameReader reader,
    DateTimeOffset createdAt,
    DateTimeOffset startedAt,
    bool fromPool)
{
    public string ContainerId => containerId;
    public SandboxProfile Profile => profile;
    public string Image => image;
    public string ImageId => imageId;
    public SandboxSettings Settings => settings;
    public MultiplexedStream Stream => stream;
    public FrameReader Reader => reader;
    public DateTimeOffset CreatedAt => createdAt;
    public DateTimeOffset StartedAt => startedAt;
    public bool FromPool { get; init; } = fromPool;
}
