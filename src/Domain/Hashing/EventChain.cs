using System.Text;

namespace Sandbox.Audited.Domain.Hashing;

/// <summary>
/// The per-stream hash chain. hash = SHA-256(prevHash ‖ canonical), where prevHash is the previous
/// event's hash as 64 lowercase hex characters (Genesis for the first event of a stream) and canonical is
/// the canonical JSON of {"data", "streamId", "type", "version"}. The event's time is its own "at" field
/// inside data, so it is covered too.
/// </summary>
public static class EventChain
{
    public static readonly string Genesis = new('0', 64);

    public static string CanonicalForm(Guid streamId, long version, string eventType, string dataJson) =>
        "{\"data\":" + CanonicalJson.Canonicalize(dataJson)
        + ",\"streamId\":\"" + streamId.ToString("D") + "\""
        + ",\"type\":\"" + eventType + "\""
        + ",\"version\":" + version + "}";

    public static string Hash(string prevHash, Guid streamId, long version, string eventType, string dataJson) =>
        Sha256Hex.Of(Encoding.UTF8.GetBytes(prevHash + CanonicalForm(streamId, version, eventType, dataJson)));
}
