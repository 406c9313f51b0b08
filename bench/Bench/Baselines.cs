using System.Diagnostics;
using Docker.DotNet;
using Docker.DotNet.Models;
using Sandbox.Audited.Executor.Sandboxes;
using ContainerSpec = Sandbox.Audited.Executor.Sandboxes.ContainerSpec;

namespace Sandbox.Audited.Bench;

/// <summary>What the service is compared with, measured on the same machine, image and sandbox flags, in the same run.</summary>
public sealed class Baselines(DockerClient docker, string image)
{
    private static readonly string[] PrintOne = ["python3", "-c", "print(1)"];

    /// <summary>`docker run --rm` from the CLI with the sandbox flags.</summary>
    public async Task<List<double>> DockerCliAsync(int runs)
    {
        var samples = new List<double>();
        for (var i = 0; i < runs; i++)
        {
            var watch = Stopwatch.StartNew();
            var (code, output) = await Shell.RunAsync("docker",
                ["run", "--rm", "--init", "--network", "none", "--read-only", "--tmpfs", "/tmp:rw,nosuid,nodev,size=16m",
                 "--user", "65534:65534", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--memory", "128m",
                 "--memory-swap", "128m", "--pids-limit", "64", "--cpus", "1", image, .. PrintOne]);
            watch.Stop();
            if (code != 0 || output.Trim() != "1")
                throw new InvalidOperationException($"docker run failed: {output}");
            samples.Add(watch.Elapsed.TotalMilliseconds);
        }
        return samples;
    }

    /// <summary>Docker API create → start → wait (the cold path's floor), and the same plus remove.</summary>
    public async Task<(List<double> ToExit, List<double> WithRemove)> DockerApiAsync(int runs)
    {
        var toExit = new List<double>();
        var withRemove = new List<double>();
        for (var i = 0; i < runs; i++)
        {
            var (exit, total) = await OneApiRunAsync();
            toExit.Add(exit);
            withRemove.Add(total);
        }
        return (toExit, withRemove);
    }

    /// <summary>Completed create/start/wait/remove cycles per second with `workers` in parallel: the churn ceiling.</summary>
    public async Task<double> ChurnCeilingAsync(int workers, TimeSpan duration)
    {
        var completed = 0;
        var until = DateTime.UtcNow + duration;
        var watch = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, workers).Select(async _ =>
        {
            while (DateTime.UtcNow < until)
            {
                await OneApiRunAsync();
                Interlocked.Increment(ref completed);
            }
        }));
        return completed / watch.Elapsed.TotalSeconds;
    }

    private async Task<(double ToExit, double Total)> OneApiRunAsync()
    {
        var profile = new SandboxProfile("python", 128, 1, 64, 16, "python", "standard");
        var parameters = ContainerSpec.Build(profile, image, "runc", "bench-baseline", "bench");
        parameters.Cmd = PrintOne;
        parameters.OpenStdin = false;
        parameters.StdinOnce = false;
        parameters.AttachStdin = false;
        var watch = Stopwatch.StartNew();
        var created = await docker.Containers.CreateContainerAsync(parameters);
        await docker.Containers.StartContainerAsync(created.ID, new ContainerStartParameters());
        var wait = await docker.Containers.WaitContainerAsync(created.ID);
        var toExit = watch.Elapsed.TotalMilliseconds;
        await docker.Containers.RemoveContainerAsync(created.ID, new ContainerRemoveParameters { Force = true });
        if (wait.StatusCode != 0)
            throw new InvalidOperationException($"baseline container exited {wait.StatusCode}");
        return (toExit, watch.Elapsed.TotalMilliseconds);
    }

    /// <summary>The floor: the image's interpreter started directly in its root filesystem (chroot), no container.</summary>
    public async Task<List<double>> BareInterpreterAsync(int runs, string cacheDir)
    {
        var imageId = (await docker.Images.InspectImageAsync(image)).ID.Replace("sha256:", "")[..12];
        var rootfs = Path.Combine(cacheDir, "rootfs-" + imageId);
        if (!Directory.Exists(rootfs))
        {
            var staging = rootfs + ".tmp";
            if (Directory.Exists(staging))
                Directory.Delete(staging, recursive: true);
            Directory.CreateDirectory(staging);
            var container = await docker.Containers.CreateContainerAsync(new CreateContainerParameters { Image = image, Cmd = ["true"] });
            try
            {
                var (code, output) = await Shell.RunAsync("sh", ["-c", $"docker export {container.ID} | tar -x -C {staging}"]);
                if (code != 0)
                    throw new InvalidOperationException("exporting the image failed: " + output);
            }
            finally
            {
                await docker.Containers.RemoveContainerAsync(container.ID, new ContainerRemoveParameters { Force = true });
            }
            Directory.Move(staging, rootfs);
        }
        var samples = new List<double>();
        for (var i = 0; i < runs; i++)
        {
            var watch = Stopwatch.StartNew();
            var (code, output) = await Shell.RunAsync("chroot", [rootfs, "/usr/bin/python3", "-c", "print(1)"]);
            watch.Stop();
            if (code != 0 || output.Trim() != "1")
                throw new InvalidOperationException("bare interpreter failed: " + output);
            samples.Add(watch.Elapsed.TotalMilliseconds);
        }
        return samples;
    }
}

public static class Shell
{
    public static async Task<(int Code, string Output)> RunAsync(string file, IEnumerable<string> args)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in args)
            info.ArgumentList.Add(arg);
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return (process.ExitCode, await stdout + await stderr);
    }
}
