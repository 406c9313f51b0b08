using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Sandbox.Audited.Tests.Infrastructure;

/// <summary>Small helpers for talking JSON to the API the way a client would.</summary>
public static class ApiCalls
{
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public static async Task<(HttpResponseMessage Response, JsonNode Body)> RunAsync(this HttpClient client, object request)
    {
        var response = await client.PostAsJsonAsync("/v1/runs", request, Json);
        return (response, await BodyAsync(response));
    }

    public static async Task<(HttpResponseMessage Response, JsonNode Body)> GetJsonAsync(this HttpClient client, string path)
    {
        var response = await client.GetAsync(path);
        return (response, await BodyAsync(response));
    }

    public static async Task<JsonNode> BodyAsync(HttpResponseMessage response)
    {
        var text = await response.Content.ReadAsStringAsync();
        return string.IsNullOrEmpty(text) ? new JsonObject() : JsonNode.Parse(text) ?? new JsonObject();
    }

    public static string Str(this JsonNode node, string path)
    {
        JsonNode? current = node;
        foreach (var part in path.Split('.'))
            current = current?[part];
        return current?.ToString() ?? "";
    }
}
