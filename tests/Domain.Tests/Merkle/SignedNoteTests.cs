using System.Text;
using NSec.Cryptography;
using Sandbox.Audited.Domain.Merkle;

namespace Sandbox.Audited.Domain.Tests.Merkle;

public sealed class SignedNoteTests
{
    // The signed-note example published with Go's sumdb/note package: key, text and signature.
    private const string PeterKey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    private const string PeterSeed = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"; // 0x01 ‖ Ed25519 seed
    private const string PeterText = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    private const string PeterNote = PeterText + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    [Fact]
    public void ThePublishedExampleNoteVerifiesWithItsKey()
    {
        var key = NoteVerifierKey.Parse(PeterKey);

        Assert.NotNull(key);
        Assert.Equal(0xc74f20a3u, key.KeyId);
        Assert.Equal(PeterKey, key.ToString());
        var result = SignedNote.Verify(PeterNote, [key]);
        Assert.True(result.Verified, result.Reason);
        Assert.Equal(PeterText, result.Text);
    }

    [Fact]
    public void SigningThePublishedTextWithThePublishedSeedGivesThePublishedNote()
    {
        using var key = Key.Import(SignatureAlgorithm.Ed25519, Convert.FromBase64String(PeterSeed)[1..], KeyBlobFormat.RawPrivateKey);
        var verifier = NoteVerifierKey.For("PeterNeumann", key.PublicKey.Export(KeyBlobFormat.RawPublicKey));
        var signature = SignatureAlgorithm.Ed25519.Sign(key, Encoding.UTF8.GetBytes(PeterText));

        Assert.Equal(PeterKey, verifier.ToString());
        Assert.Equal(PeterNote, SignedNote.Assemble(PeterText, [SignedNote.SignatureLine(verifier, signature)]));
    }

    [Fact]
    public void AChangedTextOrAnUnknownKeyDoesNotVerify()
    {
        var key = NoteVerifierKey.Parse(PeterKey)!;
        var other = NoteVerifierKey.Parse("EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop")!;

        Assert.False(SignedNote.Verify(PeterNote.Replace("problem,", "problem;"), [key]).Verified);
        Assert.False(SignedNote.Verify(PeterNote, [other]).Verified);
        Assert.True(SignedNote.Verify(PeterNote, [other, key]).Verified); // a key set: any known key that signed
        Assert.Null(NoteVerifierKey.Parse(PeterKey.Replace("c74f20a3", "c74f20a4")));
    }

    [Fact]
    public void AVerifierKeyWhoseBase64HoldsAPlusIsRead()
    {
        // A published test key of transparency-dev/formats whose base64 contains '+'.
        const string plusKey = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6";
        var key = NoteVerifierKey.Parse(plusKey);

        Assert.NotNull(key);
        Assert.Equal("TEST", key.Name);
        Assert.Equal(plusKey, key.ToString());
    }

    [Fact]
    public void ACheckpointBodyRoundTrips()
    {
        var root = Convert.FromHexString("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328");
        var body = new CheckpointBody("sandbox-audited/acme", 8, root);
        var parsed = CheckpointBody.Parse(body.Text);

        Assert.Equal("sandbox-audited/acme\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n", body.Text);
        Assert.NotNull(parsed);
        Assert.Equal(8, parsed.TreeSize);
        Assert.Equal(root, parsed.RootHash);
        Assert.Null(CheckpointBody.Parse("o\n08\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"));
    }
}
