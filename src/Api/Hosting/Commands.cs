using Marten;
using Sandbox.Audited.Api.Auth;
using Sandbox.Audited.Api.Policies;
using Sandbox.Audited.Audit;
using Sandbox.Audited.Audit.Evidence;
using Sandbox.Audited.Audit.ReadModels;
using Sandbox.Audited.Audit.Migrations;
using Sandbox.Audited.Audit.Trail;

namespace Sandbox.Audited.Api.Hosting;

/// <summary>The service's one-shot commands (`sbx` calls them): migrate, token, schema, dev-key, erase, evidence release-holds.</summary>
public static class Commands
{
    public static readonly IReadOnlySet<string> Names = new HashSet<string> { "migrate", "token", "schema", "dev-key", "policy-test", "rebuild-projections", "erase", "evidence" };

    public static async Task<int> RunAsync(string[] args, IConfiguration configuration)
    {
        var auth = configuration.GetSection(AuthOptions.Section).Get<AuthOptions>() ?? new AuthOptions();
        switch (args[0])
        {
            case "migrate":
                var admin = configuration.GetConnectionString("Admin")
                    ?? throw new InvalidOperationException("ConnectionStrings:Admin is required to apply migrations.");
                var directory = Option(args, "--dir") ?? configuration["Migrations:Directory"] ?? "migrations";
                var applied = await MigrationRunner.ApplyAsync(admin, directory, Console.Out, CancellationToken.None);
                Console.WriteLine(applied.Count == 0 ? "migrations: up to date" : $"migrations: applied {applied.Count}");
                return 0;

            case "schema":
                // Prints the Marten schema DDL; migrations/0002_marten_schema.sql was generated with it.
                using (var store = DocumentStore.For(o => MartenSetup.Configure(o, "Host=127.0.0.1")))
                    Console.WriteLine(store.Storage.ToDatabaseScript());
                return 0;

            case "rebuild-projections":
                // Replays the events into the read models (documents only: events are read, never written).
                var sandbox = configuration.GetConnectionString("Sandbox")
                    ?? throw new InvalidOperationException("ConnectionStrings:Sandbox is required to rebuild projections.");
                using (var store = DocumentStore.For(o => MartenSetup.Configure(o, sandbox)))
                {
                    using var daemon = await store.BuildProjectionDaemonAsync();
                    await daemon.RebuildProjectionAsync(RunDailyStatisticsProjection.ProjectionName, TimeSpan.FromMinutes(30), CancellationToken.None);
                    Console.WriteLine($"rebuilt {RunDailyStatisticsProjection.ProjectionName}");
                }
                return 0;

            case "erase":
                // Content erasure (retention or a data-subject request) as sandbox_eraser; `sbx erase` alone sets this connection.
                var eraserConnection = configuration.GetConnectionString("Eraser")
                    ?? throw new InvalidOperationException("ConnectionStrings:Eraser is required (run it as `./sbx erase …`).");
                var eraseTenant = Option(args, "--tenant") ?? throw new InvalidOperationException("--tenant is required.");
                var by = Option(args, "--by") ?? throw new InvalidOperationException("--by NAME is required: who erases is recorded.");
                var reason = Option(args, "--reason") ?? throw new InvalidOperationException("--reason \"…\" is required: why is recorded.");
                var eraser = new EvidenceEraser(eraserConnection, TimeProvider.System);
                var classification = Option(args, "--classification");
                IReadOnlyList<string> digests;
                if (Option(args, "--digest") is { } digest)
                    digests = [digest.ToLowerInvariant()];
                else if (Option(args, "--older-than-days") is { } days && classification is not null)
                    digests = await eraser.ExpiredAsync(eraseTenant, classification, int.Parse(days, System.Globalization.CultureInfo.InvariantCulture), CancellationToken.None);
                else
                    throw new InvalidOperationException("Name what to erase: --digest SHA256, or --older-than-days N --classification C.");
                var erasure = await eraser.EraseAsync(eraseTenant, digests, by, reason, classification, CancellationToken.None);
                Console.WriteLine($"erased {erasure.Erased.Count}{(erasure.Erased.Count > 0 ? ": " : "")}{string.Join(' ', erasure.Erased)}");
                // A tombstone is kept for any digest, so say plainly that nothing was found under it (a typo blocks nothing real).
                if (erasure.KeptOut.Count > 0)
                    Console.WriteLine($"erased {erasure.KeptOut.Count} not stored yet (no content of tenant '{eraseTenant}' under it; kept out of the store from now on — check the digest if you expected it stored): {string.Join(' ', erasure.KeptOut)}");
                if (erasure.AlreadyErased.Count > 0)
                    Console.WriteLine($"skipped {erasure.AlreadyErased.Count} already erased: {string.Join(' ', erasure.AlreadyErased)}");
                if (erasure.Empty.Count > 0)
                    Console.WriteLine($"skipped the empty content {EvidenceStore.EmptySha256}: it holds no byte to erase, and every run's empty stdin or output is it");
                return 0;

            case "evidence":
                return await EvidenceCommands.RunAsync(args, configuration);

            case "policy-test":
                // Every case in policies/tests must pass and every rule must be exercised by some case.
                var result = PolicyDirectory.RunTests(Option(args, "--dir") ?? configuration["Policies:Directory"] ?? "policies");
                Console.WriteLine(result.Report);
                return result.Success ? 0 : 1;

            case "dev-key":
                var path = Option(args, "--path") ?? auth.DevelopmentKeyPath ?? throw new InvalidOperationException("--path is required.");
                if (File.Exists(path))
                    Console.WriteLine($"development key exists: {path}");
                else if (args.Contains("--ed25519"))
                {
                    NoteSigner.CreateKey(path); // the signed-note checkpoint key (Audit:NoteKeyPath)
                    Console.WriteLine($"Ed25519 key created: {path}");
                }
                else
                {
                    DevelopmentKeys.Create(path);
                    Console.WriteLine($"development key created: {path}");
                }
                return 0;

            case "token":
                if (auth.Mode != "development")
                    throw new InvalidOperationException("Tokens can only be minted in development mode (Auth:Mode=development).");
                var subject = Option(args, "--sub") ?? throw new InvalidOperationException("--sub is required.");
                var tenant = Option(args, "--tenant") ?? throw new InvalidOperationException("--tenant is required.");
                var roles = (Option(args, "--roles") ?? "runner").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                var ttl = ParseTtl(Option(args, "--ttl") ?? "1h");
                // The service refuses longer-lived tokens; minting one would only produce a token that never works.
                if (ttl > TimeSpan.FromMinutes(auth.MaxTokenLifetimeMinutes))
                    throw new InvalidOperationException($"--ttl {Option(args, "--ttl")} is longer than the service accepts (Auth:MaxTokenLifetimeMinutes = {auth.MaxTokenLifetimeMinutes}).");
                Console.WriteLine(DevelopmentTokens.Mint(auth, subject, tenant, roles, ttl));
                return 0;
        }
        return 2;
    }

    private static string? Option(string[] args, string name)
    {
        var index = Array.IndexOf(args, name);
        return index >= 0 && index + 1 < args.Length ? args[index + 1] : null;
    }

    public static TimeSpan ParseTtl(string text)
    {
        var unit = text[^1];
        if (text.Length < 2 || !int.TryParse(text[..^1], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var value) || value <= 0)
            throw new FormatException($"--ttl '{text}' must look like 30m, 1h or 7d.");
        return unit switch
        {
            's' => TimeSpan.FromSeconds(value),
            'm' => TimeSpan.FromMinutes(value),
            'h' => TimeSpan.FromHours(value),
            'd' => TimeSpan.FromDays(value),
            _ => throw new FormatException($"--ttl '{text}' must end in s, m, h or d."),
        };
    }
}
