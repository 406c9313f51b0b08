using Sandbox.Audited.Domain.Runtimes;
using Sandbox.Audited.Domain.Startup;
using Sandbox.Audited.Domain.Text;

namespace Sandbox.Audited.Api.Runtimes;

public sealed class RuntimeOptions
{
    public const string Section = "Runtimes";

    /// <summary>The catalogue (runtimes/*.yaml); unset: the nearest "runtimes" folder above the content root or the binaries.</summary>
    public string? Directory { get; set; }

    /// <summary>Where build-images.sh stores each SBOM as &lt;sha256&gt;.spdx.json.</summary>
    public string SbomDirectory { get; set; } = "/var/lib/sandbox-audited/sboms";
}

public static class RuntimeCatalogueLoader
{
    /// <summary>Reads every *.yaml file of the catalogue; an invalid or missing catalogue stops start-up.</summary>
    public static RuntimeCatalogue Load(RuntimeOptions options, string contentRoot)
    {
        var directory = options.Directory ?? Find(contentRoot) ?? Find(AppContext.BaseDirectory)
            ?? throw new InvalidSettingException("No runtime catalogue found: set Runtimes:Directory to the repository's runtimes/ folder.");
        if (!System.IO.Directory.Exists(directory))
            throw new InvalidSettingException($"Runtimes:Directory '{directory}' does not exist.");
        var files = System.IO.Directory.EnumerateFiles(directory, "*.yaml")
            .Select(path => (Path.GetFileName(path), Utf8Text.Strict.GetString(File.ReadAllBytes(path))))
            .ToList();
        return RuntimeCatalogue.Parse(files);
    }

    private static string? Find(string start)
    {
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "runtimes");
            if (System.IO.Directory.Exists(candidate) && System.IO.Directory.EnumerateFiles(candidate, "*.yaml").Any())
                return candidate;
        }
        return null;
    }
}
