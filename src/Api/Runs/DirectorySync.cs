using System.Runtime.InteropServices;

namespace Sandbox.Audited.Api.Runs;

/// <summary>
/// fsync of a directory, which .NET has no API for: after a rename, the new name is durable only once its directory is
/// flushed, so a journal entry that was answered for survives a power loss, not only a crash of the process.
/// </summary>
internal static partial class DirectorySync
{
    // O_RDONLY | O_CLOEXEC: a directory opens read-only without O_DIRECTORY (whose value differs between architectures).
    private const int OpenFlags = 0x80000;

    public static void Flush(string directory)
    {
        if (!OperatingSystem.IsLinux())
            return;
        var fd = Open(directory, OpenFlags);
        if (fd < 0)
            throw new IOException($"Could not open '{directory}' to flush it to disk (errno {Marshal.GetLastPInvokeError()}).");
        try
        {
            if (Fsync(fd) != 0)
                throw new IOException($"Could not flush '{directory}' to disk (errno {Marshal.GetLastPInvokeError()}).");
        }
        finally
        {
            _ = Close(fd);
        }
    }

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);
}
