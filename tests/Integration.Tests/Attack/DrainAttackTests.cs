using System.Net;
using System.Net.Sockets;
using System.Text;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Api;
using Sandbox.Audited.Tests.Executor;
using Sandbox.Audited.Tests.Infrastructure;

namespace Sandbox.Audited.Tests.Attack;

/// <summary>
/// An attacker's test of the graceful stop: SIGTERM (twice) while a multipart upload is half sent and a run is in flight. The
/// upload is either refused with nothing recorded, or recorded and answered with its id, and then runs once; the run in flight
/// finishes; the node exits 0; every run ends with exactly one terminal event.
/// </summary>
public sealed class DrainAttackTests : IAsyncLifetime
{
    private readonly NodeProcesses _node = new("drain");

    public Task InitializeAsync() => _node.InitializeAsync();

    [Fact]
    public async Task SigtermTwiceDuringAHalfSentUploadAndARunInFlightLosesNothingAndRunsNothingTwice()
    {
        var since = DateTimeOffset.UtcNow;
        var service = await StartAsync();
        var token = _node.Setup.Token("uma", "tenant-drain-upload", Roles.Runner);
        using var client = service.Client(token);
        var inFlight = client.RunAsync(new { language = "shell", code = "sleep 3; echo inflight" });
        await Eventually.WaitUntilAsync(
            async () => await _node.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events WHERE type = 'sandbox_started'") == 1,
            () => "the run in flight never started", TimeSpan.FromSeconds(30));

        const string boundary = "drain-boundary";
        var head = $"--{boundary}\r\nContent-Disposition: form-data; name=\"language\"\r\n\r\nshell\r\n"
            + $"--{boundary}\r\nContent-Disposition: form-data; name=\"code\"\r\n\r\nwc -c < data.bin\r\n"
            + $"--{boundary}\r\nContent-Disposition: form-data; name=\"data.bin\"; filename=\"data.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n";
        var data = new byte[1_000_000];
        Array.Fill(data, (byte)'x');
        var tail = $"\r\n--{boundary}--\r\n";
        var length = Encoding.ASCII.GetByteCount(head) + data.Length + Encoding.ASCII.GetByteCount(tail);
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(service.Address.Host, service.Address.Port);
        await using var upload = tcp.GetStream();
        await upload.WriteAsync(Encoding.ASCII.GetBytes($"POST /v1/runs HTTP/1.1\r\nHost: {service.Address.Authority}\r\nAuthorization: Bearer {token}\r\n"
            + $"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n{head}"));
        await upload.WriteAsync(data.AsMemory(0, data.Length / 2));
        await Task.Delay(300);

        service.Terminate();
        await Task.Delay(200);
        service.Terminate();
        await Task.Delay(300);
        await upload.WriteAsync(data.AsMemory(data.Length / 2));
        await upload.WriteAsync(Encoding.ASCII.GetBytes(tail));
        using var reader = new StreamReader(upload);
        var answer = await reader.ReadToEndAsync();

        var (response, run) = await inFlight;
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("inflight\n", run.Str("stdout.content"));
        Assert.True(await service.WaitForExitAsync(TimeSpan.FromSeconds(60)), "The service did not exit after SIGTERM twice.");
        Assert.Equal(0, service.ExitCode);

        var status = answer.Split(' ', 3)[1];
        Assert.True(status is "503" or "202", "The half-sent upload got: " + answer[..Math.Min(600, answer.Length)]);
        if (status == "202")
        {
            // The body may come chunked: the run id is read from its JSON as it stands.
            var runId = System.Text.RegularExpressions.Regex.Match(answer, "\"runId\":\"([0-9a-f-]{36})\"").Groups[1].Value;
            Assert.Contains("Retry-After: 5", answer, StringComparison.OrdinalIgnoreCase);
            var again = await StartAsync();
            using var reader2 = again.Client(token);
            var finished = await AsyncRunTests.PollUntilFinishedAsync(reader2, $"/v1/runs/{runId}");
            Assert.Equal("succeeded", finished.Str("status"));
            Assert.Equal("1000000\n", finished.Str("stdout.content"));
        }
        else
            Assert.Equal(1, await _node.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events WHERE type = 'run_requested'"));
        // One terminal event a run, none abandoned, every container recorded and removed once, the tenant's chains verify.
        var violations = new List<string>();
        await Eventually.WaitUntilAsync(async () => (violations = await Faults.FaultInvariants.CheckRecordAsync(_node.Database, [_node.NodeId], since, ["tenant-drain-upload"])).Count == 0,
            () => string.Join("; ", violations), TimeSpan.FromSeconds(30), pollMs: 500);
        Assert.Equal(0, await _node.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events WHERE type = 'run_abandoned'"));
        Assert.Equal(status == "202" ? 2 : 1, await _node.Database.ScalarAsync<long>("SELECT count(*) FROM sandbox.mt_events WHERE type = 'run_completed'"));
    }

    private Task<ServiceProcess> StartAsync() => _node.StartAsync(new Dictionary<string, string> { ["Executor__PoolSizePerLanguage"] = "0" });

    public Task DisposeAsync() => _node.DisposeAsync();
}
