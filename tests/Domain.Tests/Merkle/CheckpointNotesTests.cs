using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using NSec.Cryptography;
using Sandbox.Audited.Domain.Merkle;

namespace Sandbox.Audited.Domain.Tests.Merkle;

public sealed class CheckpointNotesTests
{
    private static (string CheckpointJson, string KeyJson, NoteVerifierKey Key) Signed(string name = "sandbox-audited-test", long size = 17)
    {
        using var key = Key.Create(SignatureAlgorithm.Ed25519, new KeyCreationParameters { ExportPolicy = KeyExportPolicies.None });
        var verifier = NoteVerifierKey.For(name, key.PublicKey.Export(KeyBlobFormat.RawPublicKey));
        var root = SHA256.HashData("root"u8);
        var text = new CheckpointBody("example.test/audit/t1", size, root).Text;
        var note = SignedNote.Assemble(text, [SignedNote.SignatureLine(verifier, SignatureAlgorithm.Ed25519.Sign(key, Encoding.UTF8.GetBytes(text)))]);
        var checkpoint = JsonSerializer.Serialize(new { sequence = 42, tenant = "t1", toSequence = 99, treeSize = size, rootHash = Convert.ToHexStringLower(root), note });
        var keys = JsonSerializer.Serialize(new { noteOrigin = "example.test/audit", noteKeys = new[] { new { name, verifierKey = verifier.ToString(), current = true } } });
        return (checkpoint, keys, verifier);
    }

    [Fact]
    public void AnIntactNoteVerifiesAndAgreesWithItsHead()
    {
        var (checkpoint, keys, _) = Signed();

        var check = CheckpointNotes.Check(Assert.Single(CheckpointNotes.ParseAll(checkpoint)), CheckpointNotes.ParseKeys(keys));

        Assert.True(check.Passed, check.Detail);
        Assert.Equal("checkpoint 42 note", check.Name);
    }

    [Fact]
    public void AnAlteredNoteFails()
    {
        var (checkpoint, keys, _) = Signed();
        var note = CheckpointNotes.ParseAll(checkpoint)[0];

        var altered = note with { Note = note.Note.Replace("\n17\n", "\n18\n", StringComparison.Ordinal) };
        var check = CheckpointNotes.Check(altered, CheckpointNotes.ParseKeys(keys));

        Assert.False(check.Passed);
        Assert.Contains("does not verify", check.Detail);
    }

    [Fact]
    public void ANoteForAnotherHeadFails()
    {
        var (checkpoint, keys, _) = Signed();
        var note = CheckpointNotes.ParseAll(checkpoint)[0];

        var check = CheckpointNotes.Check(note with { TreeSize = 16 }, CheckpointNotes.ParseKeys(keys));

        Assert.False(check.Passed);
        Assert.Contains("the signed note says size 17", check.Detail);
    }

    [Fact]
    public void ANoteCheckedWithAnotherKeyFails()
    {
        var (checkpoint, _, _) = Signed();
        var (_, otherKeys, _) = Signed(); // same name, another key: another key id

        var check = CheckpointNotes.Check(CheckpointNotes.ParseAll(checkpoint)[0], CheckpointNotes.ParseKeys(otherKeys));

        Assert.False(check.Passed);
        Assert.Contains("no signature by a known key", check.Detail);
    }

    [Fact]
    public void TheNoteMustBeOfTheExpectedLog()
    {
        var (checkpoint, keys, _) = Signed();
        var note = CheckpointNotes.ParseAll(checkpoint)[0];

        // The service's origin is "{key name}/{tenant}"; this note's ("example.test/audit/t1") is not.
        var byTenant = CheckpointNotes.Check(note, CheckpointNotes.ParseKeys(keys), tenant: "t1");
        var byOrigin = CheckpointNotes.Check(note, CheckpointNotes.ParseKeys(keys), origin: "example.test/audit/t1");

        Assert.False(byTenant.Passed);
        Assert.Contains("not of \"sandbox-audited-test/t1\"", byTenant.Detail);
        Assert.True(byOrigin.Passed, byOrigin.Detail);
        Assert.Contains("origin as expected", byOrigin.Detail);
    }

    [Fact]
    public void AKeyFileThatIsNotANoteKeyIsRefused() =>
        Assert.Throws<FormatException>(() => CheckpointNotes.ParseKeys("""{"noteKeys":[{"verifierKey":"nope"}]}"""));
}
