using System.Security.Cryptography;
using System.Text;

namespace Sandbox.Audited.Domain.Hashing;

public static class Sha256Hex
{
    public static string Of(ReadOnlySpan<byte> bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

    public static string Of(string text) => Of(Encoding.UTF8.GetBytes(text));
}
