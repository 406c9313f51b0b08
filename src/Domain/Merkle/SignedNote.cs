using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using NSec.Cryptography;

namespace Sandbox.Audited.Domain.Merkle;

/// <summary>
/// An Ed25519 note verifier key as C2SP signed-note writes it: "name+hex(key id)+base64(0x01 ‖ public key)", the key id
/// being the first 4 bytes (big-endian) of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key).
/// </summary>
public sealed record NoteVerifierKey(string Name, uint KeyId, byte[] PublicKey)
{
    public const byte Ed25519Type = 0x01;

    public static NoteVerifierKey For(string name, byte[] publicKey) => new(name, KeyIdOf(name, publicKey), publicKey);

    public static uint KeyIdOf(string name, byte[] publicKey) =>
        BinaryPrimitives.ReadUInt32BigEndian(SHA256.HashData([.. Encoding.UTF8.GetBytes(name), 0x0A, Ed25519Type, .. publicKey]));

    public string KeyIdHex => KeyId.ToString("x8", CultureInfo.InvariantCulture);

    public override string ToString() => $"{Name}+{KeyIdHex}+{Convert.ToBase64String([Ed25519Type, .. PublicKey])}";

    /// <summary>Reads "name+keyid+key"; null when it is not an Ed25519 verifier key whose id matches its name and key.</summary>
    public static NoteVerifierKey? Parse(string text)
    {
        var parts = text.Trim().Split('+', 3); // names never hold '+', base64 may
        if (parts.Length != 3 || !SignedNote.IsKeyName(parts[0]) || parts[1].Length != 8
            || !uint.TryParse(parts[1], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var id))
            return null;
        byte[] key;
        try { key = Convert.FromBase64String(parts[2]); }
        catch (FormatException) { return null; }
        if (key.Length != 33 || key[0] != Ed25519Type)
            return null;
        var parsed = For(parts[0], key[1..]);
        return parsed.KeyId == id ? parsed : null;
    }
}

/// <summary>A tree head in the C2SP tlog-checkpoint body: origin, decimal tree size, base64 root hash, each line ended by "\n".</summary>
public sealed record CheckpointBody(string Origin, long TreeSize, byte[] RootHash)
{
    public string Text => FormattableString.Invariant($"{Origin}\n{TreeSize}\n{Convert.ToBase64String(RootHash)}\n");

    /// <summary>A tenant's log origin, "{logName}/{tenant}", with bytes a note line or key name must not hold percent-encoded.</summary>
    public static string OriginOf(string logName, string tenant)
    {
        var safe = new StringBuilder();
        foreach (var b in Encoding.UTF8.GetBytes(tenant))
            safe.Append(b is > 0x20 and < 0x7f and not (byte)'%' and not (byte)'+' ? ((char)b).ToString() : $"%{b:X2}");
        return $"{logName}/{safe}";
    }

    /// <summary>Reads the first three lines of a note text (extension lines after them are allowed and ignored); null when malformed.</summary>
    public static CheckpointBody? Parse(string text)
    {
        if (!text.EndsWith('\n'))
            return null;
        var lines = text[..^1].Split('\n');
        if (lines.Length < 3 || lines.Any(l => l.Length == 0) || lines[1].Length > 19
            || (lines[1].Length > 1 && lines[1][0] == '0') || !lines[1].All(char.IsAsciiDigit)
            || !long.TryParse(lines[1], NumberStyles.None, CultureInfo.InvariantCulture, out var size))
            return null;
        try
        {
            var root = Convert.FromBase64String(lines[2]);
            return root.Length == 32 ? new CheckpointBody(lines[0], size, root) : null;
        }
        catch (FormatException)
        {
            return null;
        }
    }
}

public sealed record NoteVerification(bool Verified, string? Text, IReadOnlyList<string> SignedBy, string? Reason);

/// <summary>
/// C2SP signed-note: the text (ending in "\n"), a blank line, then one line per signature,
/// "— name base64(key id (4 bytes, big-endian) ‖ signature)" ("—" is U+2014). An Ed25519 signature covers the text's bytes.
/// </summary>
public static class SignedNote
{
    private const string SignaturePrefix = "\u2014 ";

    /// <summary>A key name is non-empty UTF-8 without whitespace or '+'.</summary>
    public static bool IsKeyName(string name) => name.Length > 0 && !name.Any(c => char.IsWhiteSpace(c) || c == '+' || char.IsControl(c));

    /// <summary>The signature line of a signer, given its key and signature over the text.</summary>
    public static string SignatureLine(NoteVerifierKey key, byte[] signature)
    {
        var blob = new byte[4 + signature.Length];
        BinaryPrimitives.WriteUInt32BigEndian(blob, key.KeyId);
        signature.CopyTo(blob, 4);
        return $"{SignaturePrefix}{key.Name} {Convert.ToBase64String(blob)}\n";
    }

    public static string Assemble(string text, IEnumerable<string> signatureLines) => text + "\n" + string.Concat(signatureLines);

    /// <summary>
    /// Checks a note against a key set: at least one signature by a known key (name and id) must verify and none by a
    /// known key may fail; signatures by unknown keys (for instance witnesses) are left aside, as the format says.
    /// </summary>
    public static NoteVerification Verify(string note, IReadOnlyCollection<NoteVerifierKey> keys)
    {
        var split = note.LastIndexOf("\n\n", StringComparison.Ordinal);
        if (split < 0 || !note.EndsWith('\n'))
            return new(false, null, [], "not a signed note: no blank line between the text and the signatures");
        var text = note[..(split + 1)];
        var lines = note[(split + 2)..^1].Split('\n');
        var signedBy = new List<string>();
        foreach (var line in lines)
        {
            if (!line.StartsWith(SignaturePrefix, StringComparison.Ordinal))
                return new(false, text, signedBy, $"malformed signature line '{line}'");
            var fields = line[SignaturePrefix.Length..].Split(' ');
            byte[] blob;
            try { blob = fields.Length == 2 ? Convert.FromBase64String(fields[1]) : []; }
            catch (FormatException) { blob = []; }
            if (blob.Length < 5)
                return new(false, text, signedBy, $"malformed signature line '{line}'");
            var id = BinaryPrimitives.ReadUInt32BigEndian(blob);
            var key = keys.FirstOrDefault(k => k.Name == fields[0] && k.KeyId == id);
            if (key is null)
                continue;
            if (!VerifiesEd25519(key.PublicKey, Encoding.UTF8.GetBytes(text), blob[4..]))
                return new(false, text, signedBy, $"the signature by {key.Name}+{key.KeyIdHex} does not verify: the note was changed or not signed by that key");
            signedBy.Add($"{key.Name}+{key.KeyIdHex}");
        }
        return signedBy.Count > 0
            ? new(true, text, signedBy, null)
            : new(false, text, signedBy, "no signature by a known key");
    }

    private static bool VerifiesEd25519(byte[] publicKey, byte[] data, byte[] signature)
    {
        if (publicKey.Length != 32 || signature.Length != 64)
            return false;
        return PublicKey.TryImport(SignatureAlgorithm.Ed25519, publicKey, KeyBlobFormat.RawPublicKey, out var key)
            && SignatureAlgorithm.Ed25519.Verify(key!, data, signature);
    }
}
