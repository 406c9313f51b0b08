using Docker.DotNet;
using Docker.DotNet.Models;
using ContainerSpec = Sandbox.Audited.Executor.Sandboxes.ContainerSpec;

namespace Sandbox.Audited.Tests.Executor;

/// <summary>What the Docker engine holds for a node: the tests' own view, straight from the engine.</summary>
public static class Containers
{
    public static async Task<IList<ContainerListResponse>> OfNodeAsync(string nodeId)
    {
        using var docker = new DockerClientConfiguration(new Uri("unix:///var/run/docker.sock")).CreateClient();
        return await docker.Containers.ListContainersAsync(new ContainersListParameters
        {
            All = true,
            Filters = new Dictionary<string, IDictionary<string, bool>>
            {
                ["label"] = new Dictionary<string, bool> { [$"{ContainerSpec.NodeLabel}={nodeId}"] = true },
            },
        });
    }

    /// <summary>
    /// Polls until every container of the node passes <paramref name="allowed"/> (removal happens off the request
    /// path, and the pool may be refilling), and returns those that still do not.
    /// </summary>
    public static async Task<List<ContainerListResponse>> LeftoversAsync(string nodeId, Func<ContainerListResponse, bool> allowed, TimeSpan? within = null)
    {
        var deadline = DateTime.UtcNow + (within ?? TimeSpan.FromSeconds(20));
        while (true)
        {
            var left = (await OfNodeAsync(nodeId)).Where(c => !allowed(c)).ToList();
            if (left.Count == 0 || DateTime.UtcNow > deadline)
                return left;
            await Task.Delay(200);
        }
    }

    /// <summary>
    /// A test's clean-up: force-removes whatever the node left in the engine. A container the node's own last removals
    /// took away between the listing and the removal is already gone, which is what the clean-up wants.
    /// </summary>
    public static async Task RemoveAllOfNodeAsync(string nodeId)
    {
        using var docker = new DockerClientConfiguration(new Uri("unix:///var/run/docker.sock")).CreateClient();
        foreach (var container in await OfNodeAsync(nodeId))
            await RemoveAsync(docker, container.ID);
    }

    private static async Task RemoveAsync(DockerClient docker, string id)
    {
        try
        {
            await docker.Containers.RemoveContainerAsync(id, new ContainerRemoveParameters { Force = true });
        }
        catch (DockerContainerNotFoundException)
        {
        }
        catch (DockerApiException e) when (e.StatusCode == System.Net.HttpStatusCode.Conflict)
        {
            // "removal already in progress"
        }
    }

    public static string Describe(IEnumerable<ContainerListResponse> containers) =>
        string.Join(", ", containers.Select(c => $"{c.ID[..12]} ({c.State}, run={(c.Labels.TryGetValue(ContainerSpec.RunLabel, out var run) ? run : "?")})"));
}
