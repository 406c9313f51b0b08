namespace Sandbox.Audited.Api.Nodes;

/// <summary>Live output and committed events of runs executed on another node, carried by pg_notify.</summary>
public static class FeedRelay
{
    public const string Channel = "sbx_run_feed";
}
