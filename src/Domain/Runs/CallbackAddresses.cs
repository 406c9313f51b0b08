using System.Net;
using System.Net.Sockets;

namespace Sandbox.Audited.Domain.Runs;

public enum AddressKind { Public, Loopback, Internal }

/// <summary>
/// Which addresses a callback may reach. Loopback, private (RFC 1918, ULA), link-local (cloud metadata at
/// 169.254.169.254), carrier-grade NAT, unspecified, multicast and reserved ranges are all internal: a callback
/// there would let a runner probe or poke the service's own network.
/// </summary>
public static class CallbackAddresses
{
    public static AddressKind Classify(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
            address = address.MapToIPv4();
        if (IPAddress.IsLoopback(address))
            return AddressKind.Loopback;
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            var b = address.GetAddressBytes();
            return b[0] switch
            {
                0 or 10 or >= 224 => AddressKind.Internal,
                100 when b[1] is >= 64 and < 128 => AddressKind.Internal,
                169 when b[1] == 254 => AddressKind.Internal,
                172 when b[1] is >= 16 and < 32 => AddressKind.Internal,
                192 when b[1] == 168 || (b[1] == 0 && b[2] is 0 or 2) => AddressKind.Internal,
                198 when b[1] is 18 or 19 => AddressKind.Internal,
                _ => AddressKind.Public,
            };
        }
        if (address.AddressFamily == AddressFamily.InterNetworkV6)
        {
            var b = address.GetAddressBytes();
            if (address.Equals(IPAddress.IPv6None) || address.IsIPv6LinkLocal || address.IsIPv6SiteLocal || address.IsIPv6Multicast
                || (b[0] & 0xFE) == 0xFC || address.IsIPv6Teredo || (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
                || (b[0] == 0 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b))
                return AddressKind.Internal;
            return AddressKind.Public;
        }
        return AddressKind.Internal;
    }

    /// <summary>Whether a callback may connect to this address under the deployment's settings.</summary>
    public static bool MayConnect(IPAddress address, bool allowLoopback, bool allowInternal) => Classify(address) switch
    {
        AddressKind.Public => true,
        AddressKind.Loopback => allowLoopback,
        _ => allowInternal,
    };
}
