using Sandbox.Audited.Domain.Runs;

namespace Sandbox.Audited.Domain.Tests.Runs;

public sealed class StoreRefusalTests
{
    [Theory]
    [InlineData("22001")] // a value too long
    [InlineData("22P05")] // an untranslatable character
    [InlineData("23514")] // a check constraint
    [InlineData("23502")] // a not-null constraint
    [InlineData("54000")] // a program limit
    public void ARefusalOfTheDataItselfIsPermanent(string sqlState) => Assert.True(StoreRefusals.IsPermanent(sqlState));

    [Theory]
    [InlineData("23505")] // a concurrent append took the version: reconciled by the journal
    [InlineData("25006")] // a read-only session (a demoted primary during a failover)
    [InlineData("57014")] // a statement timeout
    [InlineData("42501")] // a permission taken away for a while
    [InlineData("57P01")] // the server shutting down
    [InlineData("40001")] // a serialization failure
    [InlineData(null)] // no PostgreSQL error at all (a socket, a timeout of the client)
    [InlineData("")]
    [InlineData("22")]
    public void AnythingElseMayPassLaterSoItIsNotPermanent(string? sqlState) => Assert.False(StoreRefusals.IsPermanent(sqlState));

    [Theory]
    [InlineData("42501", "SQLSTATE 42501")]
    [InlineData("22P05", "SQLSTATE 22P05")]
    [InlineData("4250'", "no SQLSTATE")]
    [InlineData("permission denied for table x", "no SQLSTATE")]
    [InlineData(null, "no SQLSTATE")]
    public void OnlyTheCodeIsEverToldNeverTheStoresText(string? sqlState, string told) => Assert.Equal(told, StoreRefusals.Code(sqlState));
}
