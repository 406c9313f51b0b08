using static Sandbox.Audited.Domain.Tests.Policies.PolicyFixtures;

namespace Sandbox.Audited.Domain.Tests.Policies;

public sealed class PolicyLoadingTests
{
    [Fact]
    public void UnknownKeyIsAnErrorNamingFileAndLine()
    {
        var error = LoadError(("main.yaml", Header + """
            rules:
              - id: runners
                effect: permit
                network: true
            """));

        var only = Assert.Single(error.Errors);
        Assert.Equal("main.yaml", only.File);
        Assert.Equal(6, only.Line);
        Assert.Equal(5, only.Column);
        Assert.Contains("'network' is not allowed", only.Message, StringComparison.Ordinal);
        Assert.Contains("main.yaml:6:5:", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void MisspelledKeyListsTheAllowedKeys()
    {
        var error = LoadError(("main.yaml", Header + """
            rules:
              - id: runners
                effect: permit
                when: { role: [runner] }
            """));

        Assert.Contains("unknown key 'role'", Assert.Single(error.Errors).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void DuplicateIdAcrossFilesIsAnError()
    {
        var error = LoadError(
            ("a.yaml", Header + "rules:\n  - id: same\n    effect: permit\n"),
            ("b.yaml", "rules:\n  - id: other\n    effect: permit\n  - id: same\n    effect: forbid\n"));

        var only = Assert.Single(error.Errors);
        Assert.Equal(("b.yaml", 4), (only.File, only.Line));
        Assert.Contains("duplicate rule id 'same' (first defined at a.yaml:4)", only.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void InvalidRegexIsAnError()
    {
        var error = LoadError(("main.yaml", Header + """
            findings:
              - id: broken
                action: record
                pattern: '(unclosed'
              - id: backreference
                action: record
                pattern: '(a)\1'
            """));

        Assert.Equal(2, error.Errors.Count);
        Assert.All(error.Errors, e => Assert.Contains("not a valid regular expression", e.Message, StringComparison.Ordinal));
        Assert.Equal([6, 9], error.Errors.Select(e => e.Line));
    }

    [Fact]
    public void EveryProblemIsReportedAtOnce()
    {
        var error = LoadError(("main.yaml", Header + """
            rules:
              - effect: permit
              - id: Bad Id
                effect: permit
              - id: no-effect
              - id: typo
                effect: allow
              - id: wrong-language
                effect: permit
                when: { languages: [cobol], classifications: [secret], roles: ["has space"] }
              - id: zero-limit
                effect: permit
                limits: { memoryMb: 0, cpus: lots }
              - id: too-high
                effect: permit
                limits: { memoryMb: 4096 }
              - id: forbid-limits
                effect: forbid
                limits: { memoryMb: 64 }
            """));

        var messages = error.Errors.Select(e => e.Message).ToList();
        string[] expected =
        [
            "every rule needs an 'id'",
            "id 'Bad Id' must be lowercase",
            "rule 'no-effect' needs 'effect: permit' or 'effect: forbid'",
            "effect must be 'permit' or 'forbid', not 'allow'",
            "unknown language 'cobol'",
            "unknown classification 'secret'",
            "role 'has space' must be",
            "memoryMb (an integer) must be between 16",
            "cpus (a number of CPUs) must be a number",
            "memoryMb 4096 is above the global ceiling 512",
            "only a permit can carry 'limits'",
        ];
        foreach (var text in expected)
            Assert.Contains(messages, m => m.Contains(text, StringComparison.Ordinal));
        Assert.All(error.Errors, e => Assert.True(e.Line > 0, e.ToString()));
    }

    [Fact]
    public void DefaultsAndCeilingsAreRequiredOnceWithEveryLimit()
    {
        var missing = LoadError(("main.yaml", "rules:\n  - id: a\n    effect: permit\n"));
        Assert.Equal(2, missing.Errors.Count);

        var twice = LoadError(("a.yaml", Header), ("b.yaml", "defaults: { timeoutMs: 1 }\n"));
        Assert.Contains("'defaults' is already set in a.yaml", Assert.Single(twice.Errors).Message, StringComparison.Ordinal);

        var partial = LoadError(("a.yaml", "defaults: { timeoutMs: 1 }\n" + Header.Split('\n')[1]));
        Assert.Contains("missing or invalid: memoryMb, cpus, pids, outputBytes, tmpfsMb", Assert.Single(partial.Errors).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void YamlSyntaxAndDuplicateKeysAreErrorsWithLines()
    {
        var syntax = LoadError(("main.yaml", Header + "rules:\n  - id: [unclosed\n"));
        Assert.Equal("main.yaml", Assert.Single(syntax.Errors).File);
        Assert.Equal(5, syntax.Errors[0].Line);

        var duplicate = LoadError(("main.yaml", Header + "rules:\n  - id: a\n    id: b\n    effect: permit\n"));
        var dup = Assert.Single(duplicate.Errors);
        Assert.Equal(5, dup.Line);
        Assert.Contains("duplicate key", dup.Message, StringComparison.Ordinal);
    }
}
