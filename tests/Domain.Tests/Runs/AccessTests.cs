using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Domain.Tests.Runs;

public sealed class AccessTests
{
    private static readonly RunOwner AnnsRun = new("acme", "ann");

    private static Caller Who(string subject, string tenant, params string[] roles) => new(subject, tenant, roles);

    [Fact]
    public void RunnersRunAuditorsAndAdminsDoNot()
    {
        Assert.True(Access.MayRun(Who("ann", "acme", Roles.Runner)));
        Assert.False(Access.MayRun(Who("aud", "acme", Roles.Auditor)));
        Assert.False(Access.MayRun(Who("adm", "acme", Roles.Admin)));
        Assert.False(Access.MayRun(Who("", "acme", Roles.Runner)));
        Assert.False(Access.MayRun(Who("ann", "", Roles.Runner)));
    }

    [Theory]
    [InlineData("ann", "acme", Roles.Runner, true)]
    [InlineData("bob", "acme", Roles.Runner, false)]
    [InlineData("aud", "acme", Roles.Auditor, true)]
    [InlineData("adm", "acme", Roles.Admin, true)]
    [InlineData("aud", "other", Roles.Auditor, false)]
    [InlineData("ann", "other", Roles.Runner, false)]
    [InlineData("", "acme", Roles.Auditor, false)]
    public void OwnersAndTheirTenantsAuditorsReadARun(string subject, string tenant, string role, bool may) =>
        Assert.Equal(may, Access.MayRead(Who(subject, tenant, role), AnnsRun));

    [Fact]
    public void OnlyTheOwnerWatchesTheLiveStream()
    {
        Assert.True(Access.MayWatch(Who("ann", "acme"), AnnsRun));
        Assert.False(Access.MayWatch(Who("aud", "acme", Roles.Auditor), AnnsRun));
        Assert.False(Access.MayWatch(Who("ann", "other", Roles.Runner), AnnsRun));
    }

    [Fact]
    public void OwnerOrTenantAdminReproducesAuditorsDoNot()
    {
        Assert.True(Access.MayReproduce(Who("ann", "acme", Roles.Runner), AnnsRun));
        Assert.True(Access.MayReproduce(Who("adm", "acme", Roles.Admin), AnnsRun));
        Assert.False(Access.MayReproduce(Who("aud", "acme", Roles.Auditor), AnnsRun));
        Assert.False(Access.MayReproduce(Who("adm", "other", Roles.Admin), AnnsRun));
    }

    [Fact]
    public void AuditorsAuditOnlyTheirOwnTenant()
    {
        Assert.True(Access.MayAudit(Who("aud", "acme", Roles.Auditor)));
        Assert.True(Access.MayAudit(Who("aud", "acme", Roles.Auditor), "acme"));
        Assert.False(Access.MayAudit(Who("aud", "acme", Roles.Auditor), "other"));
        Assert.False(Access.MayAudit(Who("ann", "acme", Roles.Runner)));
        Assert.False(Access.MayAudit(Who("aud", "", Roles.Auditor)));
    }

    [Fact]
    public void OnlyTheServiceTenantsAdminIsServiceAdmin()
    {
        Assert.True(Access.IsServiceAdmin(Who("root", "ops", Roles.Admin), "ops"));
        Assert.False(Access.IsServiceAdmin(Who("adm", "acme", Roles.Admin), "ops"));
        Assert.False(Access.IsServiceAdmin(Who("aud", "ops", Roles.Auditor), "ops"));
        Assert.False(Access.IsServiceAdmin(Who("root", "", Roles.Admin), ""));
    }

    [Fact]
    public void ReadsByAnyoneButTheOwnerAreNotTheOwners()
    {
        Assert.True(Access.IsOwner(Who("ann", "acme"), AnnsRun));
        Assert.False(Access.IsOwner(Who("ann", "other"), AnnsRun));
        Assert.False(Access.IsOwner(Who("aud", "acme", Roles.Auditor), AnnsRun));
    }
}
