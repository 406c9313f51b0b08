namespace Sandbox.Audited.Tests.Infrastructure;

/// <summary>Waiting for something asynchronous to happen, with an explicit limit and a message that says what did not.</summary>
public static class Eventually
{
    /// <summary>Polls until condition holds; fails with failure() (read at that moment) once the limit has passed.</summary>
    public static async Task WaitUntilAsync(Func<Task<bool>> condition, Func<string> failure, TimeSpan within, int pollMs = 100)
    {
        var deadline = DateTime.UtcNow + within;
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, failure());
            await Task.Delay(pollMs);
        }
    }
}
