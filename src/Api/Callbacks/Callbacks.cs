using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Options;
using Sandbox.Audited.Api.Runs;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Api.Callbacks;

public sealed class CallbackOptions
{
    public const string Section = "Callbacks";

    /// <summary>Host names a callbackUrl may name; whatever they resolve to is still checked at connect time.</summary>
    public List<string> AllowedHosts { get; set; } = [];

    /// <summary>Whether loopback addresses (127.0.0.0/8, ::1, localhost) may be called back. Off unless set: the service's own port is there.</summary>
    public bool AllowLoopback { get; set; }

    /// <summary>Whether private, link-local and other internal addresses may be called back (CallbackAddresses). Off unless set.</summary>
    public bool AllowInternalNetworks { get; set; }

    /// <summary>Per-tenant HMAC secrets (Callbacks:Secrets:&lt;tenant&gt;); a tenant without one cannot use callbacks.</summary>
    public Dictionary<string, string> Secrets { get; set; } = new(StringComparer.Ordinal);

    public int MaxAttempts { get; set; } = 3;

    /// <summary>Wait after the first failed attempt; doubled after each further one (capped at MaxBackoffSeconds).</summary>
    public int InitialBackoffMs { get; set; } = 500;

    public int MaxBackoffSeconds { get; set; } = 300;

    public int TimeoutSeconds { get; set; } = 10;

    /// <summary>How often each api node's delivery worker looks for due callbacks in the outbox.</summary>
    public int PollMilliseconds { get; set; } = 500;

    /// <summary>How long a claimed callback stays with its worker without news; a node that dies gives it up after this.</summary>
    public int LeaseSeconds { get; set; } = 60;

    /// <summary>Callbacks one node delivers at the same time.</summary>
    public int MaxConcurrentDeliveries { get; set; } = 8;
}

/// <summary>
/// Sends a finished run to its callbackUrl: POST of the run as JSON, signed with HMAC-SHA256 over
/// "{timestamp}.{body}" with the tenant's secret (headers X-Sandbox-Signature: sha256=&lt;hex&gt; and
/// X-Sandbox-Timestamp: unix seconds). The durable outbox (CallbackOutbox) decides when, retries and records.
/// </summary>
public sealed partial class CallbackSender(IHttpClientFactory clients, IOptions<CallbackOptions> options, TimeProvider clock, ILogger<CallbackSender> logger)
{
    public const string HttpClientName = "callbacks";
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    /// <summary>Why this URL may not be used by this tenant, or null when it may.</summary>
    public string? Refuse(string tenant, string url)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
            return "callbackUrl must be an absolute http(s) URL.";
        if (!string.IsNullOrEmpty(uri.UserInfo))
            return "callbackUrl must not carry credentials.";
        var o = options.Value;
        var literal = IPAddress.TryParse(uri.Host.Trim('[', ']'), out var ip) ? ip : null;
        var allowed = literal is not null
            ? CallbackAddresses.MayConnect(literal, o.AllowLoopback, o.AllowInternalNetworks)
                && (CallbackAddresses.Classify(literal) != AddressKind.Public || o.AllowedHosts.Contains(uri.IdnHost, StringComparer.OrdinalIgnoreCase))
            : uri.IsLoopback ? o.AllowLoopback : o.AllowedHosts.Contains(uri.IdnHost, StringComparer.OrdinalIgnoreCase);
        if (!allowed)
            return $"callbackUrl host '{uri.Host}' is not allowed: this deployment sends callbacks only to the hosts in Callbacks:AllowedHosts"
                + (o.AllowedHosts.Count == 0 ? " (none)" : $" ({string.Join(", ", o.AllowedHosts)})")
                + (o.AllowLoopback ? " and loopback" : "") + "; internal addresses need Callbacks:AllowInternalNetworks.";
        if (!options.Value.Secrets.ContainsKey(tenant))
            return $"No callback secret is configured for tenant '{tenant}' (Callbacks:Secrets:{tenant}), so callbacks cannot be signed.";
        return null;
    }

    public static string Sign(string secret, string timestamp, ReadOnlySpan<byte> body)
    {
        var message = new byte[Encoding.UTF8.GetByteCount(timestamp) + 1 + body.Length];
        var n = Encoding.UTF8.GetBytes(timestamp, message);
        message[n] = (byte)'.';
        body.CopyTo(message.AsSpan(n + 1));
        return "sha256=" + Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), message));
    }

    /// <summary>One signed POST of the run's body; the receiver's status, or why it could not be reached. Never throws for the receiver.</summary>
    public async Task<(int? Status, string? Error)> SendAsync(string tenant, string url, Guid runId, int attempt, byte[] body)
    {
        var client = clients.CreateClient(HttpClientName);
        client.Timeout = TimeSpan.FromSeconds(options.Value.TimeoutSeconds);
        try
        {
            var timestamp = clock.GetUtcNow().ToUnixTimeSeconds().ToString(CultureInfo.InvariantCulture);
            using var request = new HttpRequestMessage(HttpMethod.Post, url) { Content = new ByteArrayContent(body) };
            request.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
            request.Headers.Add("X-Sandbox-Timestamp", timestamp);
            request.Headers.Add("X-Sandbox-Signature", Sign(options.Value.Secrets[tenant], timestamp, body));
            request.Headers.Add("X-Sandbox-Run-Id", runId.ToString());
            request.Headers.Add("X-Sandbox-Attempt", attempt.ToString(CultureInfo.InvariantCulture));
            using var response = await client.SendAsync(request);
            var status = (int)response.StatusCode;
            return (status, response.IsSuccessStatusCode ? null : $"the receiver answered {status}");
        }
        catch (Exception e)
        {
            // One text for refused, reset, unreachable, timed out or blocked: what is recorded tells no port scan anything.
            LogAttemptFailed(e, runId, attempt);
            return (null, "the receiver could not be reached");
        }
    }

    /// <summary>The body a receiver gets: the run as GET /v1/runs/{id} shows it, from its committed record.</summary>
    public static byte[] Body(RunView run) => JsonSerializer.SerializeToUtf8Bytes(run, Json);

    [LoggerMessage(Level = LogLevel.Information, Message = "Run {RunId}: callback attempt {Attempt} did not reach the receiver")]
    private partial void LogAttemptFailed(Exception e, Guid runId, int attempt);

    /// <summary>
    /// The callback client: no redirects, no proxy, and every address a name resolves to is checked when connecting,
    /// so a name that passed the allow-list cannot be rebound to an internal address afterwards.
    /// </summary>
    public static IServiceCollection AddCallbacks(IServiceCollection services, IConfiguration configuration, bool deliver = true)
    {
        services.Configure<CallbackOptions>(configuration.GetSection(CallbackOptions.Section));
        services.AddHttpClient(HttpClientName).ConfigurePrimaryHttpMessageHandler(provider =>
        {
            var options = provider.GetRequiredService<IOptions<CallbackOptions>>();
            return new SocketsHttpHandler
            {
                AllowAutoRedirect = false,
                UseProxy = false,
                ConnectCallback = (context, ct) => ConnectCheckedAsync(context, options.Value, ct),
            };
        });
        services.AddSingleton<CallbackSender>();
        // Delivery needs the tenants' callback secrets, which only api nodes hold.
        if (deliver)
            services.AddHostedService<CallbackOutbox>();
        return services;
    }

    private static async ValueTask<Stream> ConnectCheckedAsync(SocketsHttpConnectionContext context, CallbackOptions options, CancellationToken ct)
    {
        var host = context.DnsEndPoint.Host;
        var addresses = IPAddress.TryParse(host.Trim('[', ']'), out var literal) ? [literal] : await Dns.GetHostAddressesAsync(host, ct);
        var usable = addresses.Where(a => CallbackAddresses.MayConnect(a, options.AllowLoopback, options.AllowInternalNetworks)).ToList();
        if (usable.Count == 0 || usable.Count != addresses.Length)
            throw new HttpRequestException("The callback host resolves to an address callbacks may not reach.");
        var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp) { NoDelay = true };
        try
        {
            // Connect to the addresses just checked, never to the name again (which could resolve differently).
            await socket.ConnectAsync(usable.ToArray(), context.DnsEndPoint.Port, ct);
            return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }
}
