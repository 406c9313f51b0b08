using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Domain.Runs;
using Sandbox.Audited.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Sandbox.Audited.Tests.Executor;

/// <summary>
/// A live-output subscriber that does not read (its socket's receive buffer small and full) while a program prints 128 MiB:
/// the service (a real process, its RSS measured) holds at most RunFeed.MaxQueuedBytes for it, tells it `fell_behind` when it
/// reads again, and a reconnect from that id gets the rest; a reading client gets every byte.
/// </summary>
public sealed class SlowSubscriberTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const int OutputMiB = 128;

    private readonly TestDatabase _database = new();
    private readonly string _keyPath = Path.Combine(Path.GetTempPath(), "sbx-test-key-" + Guid.NewGuid().ToString("N") + ".pem");
    private readonly string _policies = Directory.CreateTempSubdirectory("sbx-test-policies-").FullName;
    private ServiceProcess.Setup _setup = null!;

    public async Task InitializeAsync()
    {
        await _database.CreateAsync();
        DevelopmentKeys.Create(_keyPath);
        _setup = new ServiceProcess.Setup(_database, _keyPath, "slow-" + Guid.NewGuid().ToString("N")[..8]);
        // The shipped bundle with room for a large output (its ceiling is 4 MiB a stream).
        var bundle = await File.ReadAllTextAsync(Path.Combine(TestEnvironment.RepoRoot, "policies", "default.yaml"));
        await File.WriteAllTextAsync(Path.Combine(_policies, "default.yaml"), bundle.Replace("outputBytes: 4194304", "outputBytes: 268435456")
            .Replace("outputBytes: 1048576", "outputBytes: 268435456"));
    }

    [Fact]
    public async Task AClientThatDoesNotReadTheStreamCostsTheServiceABoundedAmountAndLosesNothing()
    {
        await using var service = await ServiceProcess.StartAsync(_setup, new Dictionary<string, string>
        {
            ["Policies__Directory"] = _policies,
            ["Executor__PoolSizePerLanguage"] = "0",
        });
        var token = _setup.Token("sol", "tenant-slow-stream", Roles.Runner);
        using var client = service.Client(token);
        var expected = Convert.ToHexStringLower(SHA256.HashData(Enumerable.Repeat(Encoding.ASCII.GetBytes(new string('y', 1023) + "\n"), OutputMiB * 1024).SelectMany(b => b).ToArray()));

        // The same run twice, with a reading client: first alone (what passing the output through costs the service), then
        // beside a subscriber that does not read. Before the bound, that subscriber held the whole output (+128 MiB).
        var baseline = Rss(service.Pid);
        var (alone, _) = await RunAsync(service, client, token, expected, stall: false);
        var (beside, stalledResponse) = await RunAsync(service, client, token, expected, stall: true);
        output.WriteLine($"service RSS {baseline / 1048576.0:F0} MiB at start, peak {alone / 1048576.0:F0} MiB with a reading client, "
            + $"{beside / 1048576.0:F0} MiB with one that does not read beside it");
        Assert.True(beside - alone < 48L << 20, $"the service grew by {(beside - alone) / 1048576.0:F0} MiB more while one subscriber did not read");

        // The stalled client now reads: its stream ends with fell_behind (or the server cut it for not reading), never
        // silently short; from the last id it got, a reconnect brings the rest, and the whole is the program's output.
        using (stalledResponse)
        {
            var (sofar, lastId, sawFellBehind) = await DrainAsync(stalledResponse!);
            output.WriteLine($"stalled client: {sofar.Length} bytes before it resumed from {lastId}, fell_behind: {sawFellBehind}");
            Assert.True(sawFellBehind || sofar.Length < OutputMiB << 20, "the stalled client got neither fell_behind nor a cut stream");
            var (whole, _, _) = await FollowAsync(client, stalledResponse!.RequestMessage!.RequestUri!.AbsolutePath, lastId, sofar);
            Assert.Equal(expected, whole);
        }
    }

    // One run printing OutputMiB after a pause (so that the subscribers are there first); the peak RSS while a reading client
    // follows it, which must get every byte; with stall, also a subscriber that never reads (its response, unread).
    private async Task<(long PeakRss, HttpResponseMessage? Stalled)> RunAsync(ServiceProcess service, HttpClient client, string token, string expected, bool stall)
    {
        var code = $"import sys, time\ntime.sleep(3)\nline = b'y' * 1023 + b'\\n'\nfor _ in range({OutputMiB} * 1024):\n    sys.stdout.buffer.write(line)\n";
        var (accepted, run) = await client.RunAsync(new { language = "python", code, wait = false, limits = new { outputBytes = 192 << 20, timeoutMs = 60000 } });
        Assert.Equal(HttpStatusCode.Accepted, accepted.StatusCode);
        var stream = $"/v1/runs/{run.Str("runId")}/stream";

        HttpResponseMessage? stalledResponse = null;
        if (stall)
        {
            // A 4 KiB receive buffer, and the response body not read while the program prints.
            var handler = new SocketsHttpHandler
            {
                ConnectCallback = async (context, ct) =>
                {
                    var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = 4096 };
                    await socket.ConnectAsync(context.DnsEndPoint, ct);
                    return new NetworkStream(socket, ownsSocket: true);
                },
            };
            var stalled = new HttpClient(handler) { BaseAddress = service.Address, Timeout = Timeout.InfiniteTimeSpan };
            stalled.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
            stalledResponse = await stalled.GetAsync(stream, HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(HttpStatusCode.OK, stalledResponse.StatusCode);
        }

        var peak = Rss(service.Pid);
        var reading = FollowAsync(client, stream, null);
        while (!reading.IsCompleted)
        {
            peak = Math.Max(peak, Rss(service.Pid));
            await Task.WhenAny(reading, Task.Delay(100));
        }
        var (got, _, reconnects) = await reading;
        output.WriteLine($"reading client reconnected {reconnects} times");
        Assert.Equal(expected, got); // a reading client gets all of it, byte for byte
        return (peak, stalledResponse);
    }

    /// <summary>Reads the run's stream to `end`, reconnecting from the last id after fell_behind or a cut; the SHA-256 of stdout.</summary>
    private static async Task<(string Sha256, string? LastId, int Reconnects)> FollowAsync(HttpClient client, string stream, string? lastId, byte[]? before = null)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        if (before is not null)
            hash.AppendData(before);
        var reconnects = -1;
        while (true)
        {
            reconnects++;
            using var request = new HttpRequestMessage(HttpMethod.Get, stream);
            if (lastId is not null)
                request.Headers.Add("Last-Event-ID", lastId);
            using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var ended = false;
            try
            {
                await foreach (var (type, id, data) in EventsAsync(await response.Content.ReadAsStreamAsync()))
                {
                    lastId = id ?? lastId;
                    if (type == "stdout")
                        hash.AppendData(Bytes(data));
                    else if (type == "end")
                        ended = true;
                }
            }
            catch (Exception e) when (e is IOException or HttpRequestException)
            {
            }
            if (ended)
                return (Convert.ToHexStringLower(hash.GetHashAndReset()), lastId, reconnects);
            Assert.True(reconnects < 200, "the stream never reached its end");
        }
    }

    private static async Task<(byte[] Stdout, string? LastId, bool FellBehind)> DrainAsync(HttpResponseMessage response)
    {
        var stdout = new MemoryStream();
        string? lastId = null;
        var fellBehind = false;
        try
        {
            await foreach (var (type, id, data) in EventsAsync(await response.Content.ReadAsStreamAsync()))
            {
                lastId = id ?? lastId;
                if (type == "stdout")
                    stdout.Write(Bytes(data));
                fellBehind |= type == "fell_behind";
                Assert.NotEqual("end", type); // it cannot have had all of the output
            }
        }
        catch (Exception e) when (e is IOException or HttpRequestException)
        {
        }
        return (stdout.ToArray(), lastId, fellBehind);
    }

    private static byte[] Bytes(JsonNode data) => data["text"] is { } text
        ? Encoding.UTF8.GetBytes((string)text!)
        : Convert.FromBase64String((string)data["base64"]!);

    private static async IAsyncEnumerable<(string Type, string? Id, JsonNode Data)> EventsAsync(Stream body)
    {
        using var reader = new StreamReader(body, Encoding.UTF8);
        string type = "message", data = "";
        string? id = null;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (line.Length == 0)
            {
                if (data.Length > 0)
                    yield return (type, id, JsonNode.Parse(data)!);
                (type, data, id) = ("message", "", null);
            }
            else if (line.StartsWith("event: ", StringComparison.Ordinal))
                type = line[7..];
            else if (line.StartsWith("id: ", StringComparison.Ordinal))
                id = line[4..];
            else if (line.StartsWith("data: ", StringComparison.Ordinal))
                data = line[6..];
        }
    }

    private static long Rss(int pid)
    {
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) * 1024;
        throw new InvalidOperationException("no VmRSS");
    }

    public async Task DisposeAsync()
    {
        await Containers.RemoveAllOfNodeAsync(_setup.NodeId);
        await _database.DisposeAsync();
        File.Delete(_keyPath);
        Directory.Delete(_policies, recursive: true);
    }
}
