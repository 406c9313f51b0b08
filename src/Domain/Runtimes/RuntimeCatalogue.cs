using Sandbox.Audited.Domain.Policies;
using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Domain.Runtimes;

/// <summary>One approved runtime as its catalogue file states it: the Debian packages on top of a minimal base.</summary>
public sealed record RuntimeDefinition(string Id, string Language, string Base, IReadOnlyList<string> Packages, string Description);

public sealed class RuntimeCatalogueException(IReadOnlyList<PolicyError> errors)
    : Exception("The runtime catalogue is invalid:\n" + string.Join("\n", errors))
{
    public IReadOnlyList<PolicyError> Errors { get; } = errors;
}

/// <summary>
/// The runtimes a run may name (runtimes/*.yaml, one file per runtime). The lean runtime of a language has the
/// language's own name, so a request that names no runtime runs exactly as before runtimes existed.
/// </summary>
public sealed class RuntimeCatalogue
{
    public const string Base = "bookworm";

    private static readonly string[] Keys = ["id", "language", "base", "packages", "description"];

    private RuntimeCatalogue(IReadOnlyList<RuntimeDefinition> runtimes) => All = runtimes;

    /// <summary>Sorted by id.</summary>
    public IReadOnlyList<RuntimeDefinition> All { get; }

    public IReadOnlyList<string> Ids => All.Select(r => r.Id).ToList();

    public RuntimeDefinition? Find(string id) => All.FirstOrDefault(r => r.Id == id);

    /// <summary>The runtime a request gets: the one it names, or its language's lean runtime; an error names the choices.</summary>
    public (RuntimeDefinition? Runtime, string? Error) Resolve(string language, string? runtime)
    {
        var id = string.IsNullOrWhiteSpace(runtime) ? language : runtime.Trim();
        if (Find(id) is not { } found)
            return (null, string.IsNullOrWhiteSpace(runtime)
                ? $"No lean runtime '{language}' is in the catalogue; name one of: {string.Join(", ", Ids)}."
                : $"Unknown runtime '{Runs.ClientText.Echo(runtime)}': use one of {string.Join(", ", Ids)}.");
        if (found.Language != language)
            return (null, $"Runtime '{found.Id}' runs {found.Language}, not {language}; for {language} use one of: " +
                          $"{string.Join(", ", All.Where(r => r.Language == language).Select(r => r.Id))}.");
        return (found, null);
    }

    /// <summary>Parses catalogue files (name, YAML content); throws <see cref="RuntimeCatalogueException"/> listing every error.</summary>
    public static RuntimeCatalogue Parse(IReadOnlyList<(string Path, string Content)> files)
    {
        var errors = new List<PolicyError>();
        var runtimes = new List<RuntimeDefinition>();
        foreach (var (path, content) in files.OrderBy(f => f.Path, StringComparer.Ordinal))
        {
            var reader = new YamlReader(path, errors);
            if (reader.ParseRoot(content) is not { } root || YamlReader.IsNull(root))
            {
                reader.FileError("a runtime file must be a mapping with id, language, base, packages and description");
                continue;
            }
            if (reader.Fields(root, "a runtime", Keys) is not { } fields) continue;
            string? Text(string key)
            {
                if (fields.TryGetValue(key, out var node)) return reader.String(node, $"'{key}'");
                if (key != "description") reader.Error(root, $"a runtime needs '{key}'");
                return null;
            }
            var id = Text("id");
            var language = Text("language");
            var @base = Text("base");
            var description = Text("description") ?? "";
            var packages = fields.TryGetValue("packages", out var list)
                ? reader.Strings(list, "'packages'", p => DebianName(p) ? null : $"'{p}' is not a Debian package name")
                : [];
            if (!fields.ContainsKey("packages")) reader.Error(root, "a runtime needs 'packages' (a list, may be empty)");

            var name = Path.GetFileNameWithoutExtension(path);
            if (id is not null && (!IdSyntax(id) || id != name))
                reader.Error(fields["id"], $"id '{id}' must equal the file name '{name}' and be lowercase letters, digits and '-' (at most 32)");
            if (language is not null && !Languages.All.Contains(language))
                reader.Error(fields["language"], $"unknown language '{language}'; use one of {string.Join(", ", Languages.All)}");
            if (@base is not null && @base != Base)
                reader.Error(fields["base"], $"base must be '{Base}'");
            if (id is null || language is null || @base is null) continue;
            if (runtimes.Any(r => r.Id == id))
                reader.Error(fields["id"], $"runtime '{id}' is defined twice");
            runtimes.Add(new RuntimeDefinition(id, language, @base, packages, description));
        }
        if (files.Count == 0)
            errors.Add(new PolicyError("(catalogue)", 0, 0, "the runtime catalogue has no *.yaml files"));
        if (errors.Count > 0) throw new RuntimeCatalogueException(errors);
        return new RuntimeCatalogue(runtimes.OrderBy(r => r.Id, StringComparer.Ordinal).ToList());
    }

    private static bool IdSyntax(string id) =>
        id.Length is > 0 and <= 32 && char.IsAsciiLetterLower(id[0]) && id.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c == '-');

    private static bool DebianName(string name) =>
        name.Length >= 2 && (char.IsAsciiLetterLower(name[0]) || char.IsAsciiDigit(name[0]))
        && name.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c is '.' or '+' or '-');
}
