using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Policies;
using static Sandbox.Audited.Domain.Tests.Policies.PolicyFixtures;

namespace Sandbox.Audited.Domain.Tests.Policies;

public sealed class PolicyDigestTests
{
    private const string Rules = "rules:\n  - id: all\n    effect: permit\n";

    [Fact]
    public void DigestFollowsTheDocumentedLayout()
    {
        var bundle = PolicyBundle.FromFiles([("b.yaml", Rules), ("a.yaml", Header)]);

        var expected = Sha256Hex.Of($"a.yaml\t{Sha256Hex.Of(Header)}\nb.yaml\t{Sha256Hex.Of(Rules)}\n");

        Assert.Equal(expected, bundle.Digest);
        Assert.Matches("^[0-9a-f]{64}$", bundle.Digest);
        Assert.Equal(Sha256Hex.Of(Header), bundle.Files[0].Sha256);
    }

    [Fact]
    public void DigestIsStableAndIndependentOfFileOrder()
    {
        var one = PolicyBundle.FromFiles([("a.yaml", Header), ("b.yaml", Rules)]);
        var two = PolicyBundle.FromFiles([("b.yaml", Rules), ("a.yaml", Header)]);

        Assert.Equal(one.Digest, two.Digest);
        Assert.Equal(one.Digest, PolicyBundle.FromFiles([("a.yaml", Header), ("b.yaml", Rules)]).Digest);
    }

    [Fact]
    public void DigestChangesWhenAFileOrItsNameChanges()
    {
        var original = PolicyBundle.FromFiles([("a.yaml", Header), ("b.yaml", Rules)]).Digest;

        var edited = PolicyBundle.FromFiles([("a.yaml", Header), ("b.yaml", Rules + "# comment\n")]).Digest;
        var renamed = PolicyBundle.FromFiles([("a.yaml", Header), ("c.yaml", Rules)]).Digest;

        Assert.NotEqual(original, edited);
        Assert.NotEqual(original, renamed);
    }

    [Fact]
    public void LoadingFromDiskAndFromStoredContentGiveTheSameDigest()
    {
        var fromDisk = Shipped();

        var replayed = PolicyBundle.FromFiles(fromDisk.Files.Select(f => (f.Path, f.Content)).ToList());

        Assert.Equal(fromDisk.Digest, replayed.Digest);
    }
}
