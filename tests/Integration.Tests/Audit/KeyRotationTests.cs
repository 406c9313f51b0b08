using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Audit.Trail;
using Sandbox.Audited.Domain.Merkle;

namespace Sandbox.Audited.Tests.Audit;

/// <summary>After a key rotation, heads and notes signed with the earlier key keep verifying while its public key stays published.</summary>
public sealed class KeyRotationTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("sbx-rotation-").FullName;

    private string PathOf(string name) => Path.Combine(_dir, name);

    [Fact]
    public void AHeadSignedWithAnEarlierPublishedEcdsaKeyStillVerifies()
    {
        DevelopmentKeys.Create(PathOf("old.pem"));
        DevelopmentKeys.Create(PathOf("new.pem"));
        var head = new TreeHead(42, 16, new string('a', 64));
        using var old = new CheckpointSigner(PathOf("old.pem"));
        var signature = old.Sign("acme", head);
        File.WriteAllText(PathOf("old.pub.pem"), old.PublicKeyPem);

        using var rotated = new CheckpointSigner(PathOf("new.pem"), [PathOf("old.pub.pem")]);
        using var forgetful = new CheckpointSigner(PathOf("new.pem"));

        Assert.NotEqual(old.KeyId, rotated.KeyId);
        Assert.True(rotated.Verifies("acme", head, old.KeyId, signature));
        Assert.False(rotated.Verifies("acme", head with { TreeSize = 15 }, old.KeyId, signature));
        Assert.False(forgetful.Verifies("acme", head, old.KeyId, signature));
        Assert.Equal(old.KeyId, Assert.Single(rotated.EarlierKeys).KeyId);
    }

    [Fact]
    public void ANoteSignedWithAnEarlierPublishedEd25519KeyStillVerifies()
    {
        NoteSigner.CreateKey(PathOf("old-note.pem"));
        NoteSigner.CreateKey(PathOf("new-note.pem"));
        using var old = new NoteSigner(PathOf("old-note.pem"), "sandbox-audited", null);
        var note = old.Sign("acme", 16, new byte[32])!;

        using var rotated = new NoteSigner(PathOf("new-note.pem"), "sandbox-audited", [old.Current!.ToString()]);
        using var forgetful = new NoteSigner(PathOf("new-note.pem"), "sandbox-audited", null);

        Assert.Equal(2, rotated.Keys.Count);
        Assert.Equal(rotated.Current, rotated.Keys[0]);
        Assert.True(SignedNote.Verify(note, rotated.Keys).Verified);
        Assert.False(SignedNote.Verify(note, forgetful.Keys).Verified);
        Assert.StartsWith("sandbox-audited/acme\n16\n", note);
    }

    [Fact]
    public void ATenantNameCannotForgeAnotherNoteLine()
    {
        using var signer = new NoteSigner(null, "sandbox-audited", null);

        Assert.Equal("sandbox-audited/a%0A16%0Ab%2Bc%20d", signer.Origin("a\n16\nb+c d"));
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
