using System.Globalization;
using Sandbox.Audited.Domain.Hashing;
using Sandbox.Audited.Domain.Merkle;

namespace Sandbox.Audited.Verifier;

/// <summary>
/// sbx-verify EXPORT [--checkpoint FILE]... [--key FILE]... [--inclusion FILE]... [--consistency FILE]... [--origin O]
/// sbx-verify --bundle EVIDENCE.tar [--key FILE]... [--origin O]
/// Exit codes: 0 every check passed; 1 a check failed (the record or a proof does not verify); 2 unusable input;
/// 3 (bundles) every check passed, but the checkpoint's signature was checked only with the key inside the bundle.
/// </summary>
public static class VerifyCommand
{
    public const int Verified = 0;
    public const int NotVerified = 1;
    public const int UnusableInput = 2;
    public const int VerifiedWithBundleKeyOnly = 3;

    private const string Usage = """
        usage: sbx-verify EXPORT.ndjson [--checkpoint FILE]... [--key FILE]... [--inclusion FILE]... [--consistency FILE]... [--origin O]
               sbx-verify --bundle EVIDENCE.tar [--key FILE]... [--origin O]   (GET /v1/runs/{id}/evidence)
          EXPORT.ndjson     GET /v1/audit/export (no filters), "-" for standard input
          --checkpoint F    a checkpoint (or the list) from GET /v1/audit/checkpoints
          --key F           public key(s): PEM, or the JSON of GET /v1/audit/checkpoints/key; repeat for old keys
          --inclusion F     inclusion proof(s), JSON
          --consistency F   consistency proof(s), JSON
          --origin O        the log a signed note must be of (default: "{note key name}/{tenant of the events}")
        exit code: 0 verified, 1 not verified, 2 unusable input,
                   3 bundle verified but only with the key it carries (no --key given)
        """;

    public static int Run(string[] args, TextWriter output)
    {
        string? export = null, bundle = null, origin = null;
        List<string> checkpointFiles = [], keyFiles = [], inclusionFiles = [], consistencyFiles = [];
        for (var i = 0; i < args.Length; i++)
        {
            var list = args[i] switch
            {
                "--checkpoint" => checkpointFiles,
                "--key" => keyFiles,
                "--inclusion" => inclusionFiles,
                "--consistency" => consistencyFiles,
                _ => null,
            };
            if (list is not null && i + 1 < args.Length)
                list.Add(args[++i]);
            else if (args[i] is "--bundle" or "--origin" && i + 1 < args.Length && (args[i] == "--bundle" ? bundle : origin) is null)
            {
                if (args[i] == "--bundle") bundle = args[++i];
                else origin = args[++i];
            }
            else if (args[i] is "-h" or "--help")
            {
                output.WriteLine(Usage);
                return Verified;
            }
            else if (list is null && export is null && (!args[i].StartsWith("--", StringComparison.Ordinal) || args[i] == "-"))
                export = args[i];
            else
                return Unusable(output, $"unexpected argument \"{args[i]}\"\n{Usage}");
        }
        if (bundle is not null)
            return export is null && checkpointFiles.Count + inclusionFiles.Count + consistencyFiles.Count == 0
                ? RunBundle(bundle, keyFiles, origin, output)
                : Unusable(output, "a bundle carries its own checkpoint and proofs: give --bundle with --key and --origin only\n" + Usage);
        if (export is null)
            return Unusable(output, "no export given\n" + Usage);

        using var keys = keyFiles.Count > 0 ? new CheckpointKeySet() : null;
        OfflineVerifier verifier;
        var checkpoints = new List<CheckpointHead>();
        var notes = new List<CheckpointNote>();
        var noteKeys = new List<NoteVerifierKey>();
        long lines = 0;
        var streams = new HashSet<Guid>();
        long? firstSequence = null, lastSequence = null;
        string? tenant = null;
        try
        {
            foreach (var file in checkpointFiles)
                checkpoints.AddRange(Read(file, CheckpointHead.ParseAll));
            foreach (var file in checkpointFiles)
                notes.AddRange(Read(file, CheckpointNotes.ParseAll));
            foreach (var file in keyFiles)
                noteKeys.AddRange(Read(file, CheckpointNotes.ParseKeys));
            var keyIds = keyFiles.SelectMany(file => Read(file, keys!.Add)).Distinct().ToList();
            var inclusions = inclusionFiles.SelectMany(file => Read(file, ProofFiles.ParseInclusion)).ToList();
            var consistencies = consistencyFiles.SelectMany(file => Read(file, ProofFiles.ParseConsistency)).ToList();
            verifier = new OfflineVerifier(checkpoints, keys, inclusions, consistencies);

            var bytes = export == "-" ? ReadAll(Console.OpenStandardInput()) : File.ReadAllBytes(export);
            foreach (var line in Lines(bytes))
            {
                lines++;
                if (line.IsEmpty)
                    continue;
                var e = ExportedEvent.Parse(line.Span, lines);
                verifier.Add(e);
                streams.Add(e.StreamId);
                firstSequence ??= e.Sequence;
                lastSequence = e.Sequence;
                tenant ??= e.Tenant;
            }

            output.WriteLine("sbx-verify: offline verification of a Sandbox.Audited audit export");
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  export       {export}: {streams.Count} streams, tenant \"{tenant}\", sequences {firstSequence}..{lastSequence}"));
            foreach (var file in checkpointFiles)
                output.WriteLine($"  checkpoint   {file}");
            if (keyFiles.Count > 0)
                output.WriteLine($"  keys         {string.Join(", ", keyFiles)}: {string.Join(", ", keyIds)}");
            foreach (var file in inclusionFiles.Concat(consistencyFiles))
                output.WriteLine($"  proof        {file}");
        }
        catch (Exception e) when (e is FormatException or IOException or UnauthorizedAccessException)
        {
            return Unusable(output, e.Message);
        }

        // Each checkpoint's Ed25519 signed note, when it carries one and a note key is given.
        var checks = verifier.Complete().Concat(noteKeys.Count > 0 ? notes.Select(n => CheckpointNotes.Check(n, noteKeys, tenant, origin)) : []).ToList();
        output.WriteLine();
        var width = checks.Max(c => c.Name.Length);
        foreach (var check in checks)
            output.WriteLine($"{(check.Passed ? "PASS" : "FAIL")}  {check.Name.PadRight(width)}  {check.Detail}");
        output.WriteLine();
        if (checkpoints.Count == 0)
            output.WriteLine("NOTE  no checkpoint given: a whole run removed, or events removed at the end of a stream, leave no broken link;"
                + " only a signed checkpoint (--checkpoint, --key) shows them.");
        else if (keys is null)
            output.WriteLine("NOTE  no public key given: checkpoint signatures were not checked, so the heads could have been made by anyone (--key).");

        var failed = checks.Where(c => !c.Passed).ToList();
        if (failed.Count == 0)
        {
            output.WriteLine($"VERIFIED: all {checks.Count} checks passed.");
            return Verified;
        }
        output.WriteLine($"NOT VERIFIED: {failed.Count} of {checks.Count} checks failed; first: {failed[0].Name}: {failed[0].Detail}");
        return NotVerified;
    }

    /// <summary>
    /// An evidence bundle: a tar whose files are checked against its manifest, its events, its content digests, the
    /// runtime SBOM, the policy files, the inclusion proofs and the signed checkpoint (with the given keys, else the
    /// bundle's own, which then only names the signer).
    /// </summary>
    private static int RunBundle(string path, List<string> keyFiles, string? origin, TextWriter output)
    {
        EvidenceBundleReport report;
        List<NoteVerifierKey>? trusted = null;
        try
        {
            if (keyFiles.Count > 0)
            {
                trusted = keyFiles.SelectMany(file => Read(file, CheckpointNotes.ParseKeys)).ToList();
                if (trusted.Count == 0)
                    return Unusable(output, $"{string.Join(", ", keyFiles)}: no Ed25519 note key (the JSON of GET /v1/audit/checkpoints/key, or a line name+keyid+base64)");
            }
            var files = new Dictionary<string, byte[]>(StringComparer.Ordinal);
            using (var tar = new System.Formats.Tar.TarReader(File.OpenRead(path)))
                while (tar.GetNextEntry() is { } entry)
                {
                    if (entry.EntryType is not (System.Formats.Tar.TarEntryType.RegularFile or System.Formats.Tar.TarEntryType.V7RegularFile))
                        continue;
                    using var data = new MemoryStream();
                    entry.DataStream?.CopyTo(data);
                    files[entry.Name] = data.ToArray();
                }
            report = EvidenceBundleVerifier.Verify(files, trusted, origin);
        }
        catch (Exception e) when (e is FormatException or IOException or UnauthorizedAccessException or InvalidDataException
                                       or System.Text.Json.JsonException or KeyNotFoundException or InvalidOperationException)
        {
            return Unusable(output, $"{path}: {e.Message}");
        }
        output.WriteLine($"sbx-verify: offline verification of a Sandbox.Audited evidence bundle\n  bundle       {path}");
        if (trusted is not null)
            output.WriteLine($"  keys         {string.Join(", ", keyFiles)}: {string.Join(", ", trusted.Select(k => $"{k.Name}+{k.KeyIdHex}"))}");
        output.WriteLine();
        var checks = report.Checks;
        var width = checks.Max(c => c.Name.Length);
        foreach (var check in checks)
            output.WriteLine($"{(check.Passed ? "PASS" : "FAIL")}  {check.Name.PadRight(width)}  {check.Detail}");
        output.WriteLine();
        var failed = checks.Where(c => !c.Passed).ToList();
        if (failed.Count > 0)
        {
            output.WriteLine($"NOT VERIFIED: {failed.Count} of {checks.Count} checks failed; first: {failed[0].Name}: {failed[0].Detail}");
            return NotVerified;
        }
        if (report.CheckedWithBundleKey)
        {
            output.WriteLine("NOTE  no --key given: the checkpoint's signature was checked with the key inside the bundle, which only says which key"
                + " signed. Whoever forged a bundle could sign it with a key of their own: pass --key with the service's published key"
                + " (GET /v1/audit/checkpoints/key, kept apart from the bundle).");
            output.WriteLine($"VERIFIED WITH THE BUNDLE'S OWN KEY ONLY: all {checks.Count} checks passed; who signed is not proven (exit {VerifiedWithBundleKeyOnly}).");
            return VerifiedWithBundleKeyOnly;
        }
        output.WriteLine($"VERIFIED: all {checks.Count} checks passed.");
        return Verified;
    }

    private static T Read<T>(string file, Func<string, T> parse)
    {
        try
        {
            return parse(File.ReadAllText(file));
        }
        catch (FormatException e)
        {
            throw new FormatException($"{file}: {e.Message}", e);
        }
    }

    private static byte[] ReadAll(Stream stream)
    {
        using var memory = new MemoryStream();
        stream.CopyTo(memory);
        return memory.ToArray();
    }

    private static IEnumerable<ReadOnlyMemory<byte>> Lines(byte[] bytes)
    {
        var start = 0;
        while (start < bytes.Length)
        {
            var end = Array.IndexOf(bytes, (byte)'\n', start);
            if (end < 0) end = bytes.Length;
            var length = end - start;
            if (length > 0 && bytes[end - 1] == (byte)'\r') length--;
            yield return bytes.AsMemory(start, length);
            start = end + 1;
        }
    }

    private static int Unusable(TextWriter output, string message)
    {
        output.WriteLine($"ERROR: {message}");
        output.WriteLine("NOT VERIFIED: the input could not be read.");
        return UnusableInput;
    }
}
