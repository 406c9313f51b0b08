/*
 * sbx-supervisor: the trusted process inside a Sandbox.Audited runtime container.
 *
 * It is the container's PID 1 (no separate init) and runs as the same unprivileged uid as
 * the user code. One container serves exactly one run:
 *
 *   1. pre-spawn the interpreter (python/node), which blocks until told to go, and emit 'R';
 *   2. read ONE request from stdin, stream the files to disk as they arrive and write the
 *      code into /tmp/work;
 *   3. release the interpreter, pump stdin/stdout/stderr, enforce the deadline and the
 *      output cap, frame everything in-band on stdout;
 *   4. when the main child exits (or the deadline hits) kill and reap every other process,
 *      drain the pipes, send what the program left in /tmp/work/out (artifacts, A/D/Z/S
 *      frames), write the 'X' (exit) frame and exit.
 *
 * Why user code cannot forge a frame: this process alone holds the container's stdout (the
 * children get pipes; nothing else runs in the container); it is not dumpable, so the kernel
 * refuses the same-uid user code /proc/1/fd, /proc/1/mem, ptrace, pidfd_getfd and
 * process_vm_writev; and as PID 1 it ignores every signal sent from inside its PID namespace
 * for which it has no handler (SIGKILL and SIGSTOP included), and it has none. It reaps every
 * process (orphans are reparented to PID 1). Started under an init (docker --init) it still
 * works, as a child subreaper, but then the init holds stdout and the guarantee is gone.
 *
 * Wire format (all integers u32 big-endian)
 *   request : "SBX2" timeoutMs outputCap maxArtifacts maxArtifactBytes64 maxArtifactsTotal64
 *             maxInputBytes64 argc {len bytes}*argc filec {nlen name len64 data}*filec
 *             codeLen code stdinLen stdin                       (len64: u64 big-endian)
 *   frames  : u8 type, u32 length, payload; types R O E A D Z S X F (see README.md).
 *
 * The interpreters' bootstraps live in boot.py and boot.js next to this file and are
 * embedded at build time (.incbin): the directory holding them must be on the assembler's
 * include path.
 * Build: gcc -O2 -static -Wall -Wextra -Werror -Wa,-I,DIR -o sbx-supervisor sbx-supervisor.c
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WORKDIR        "/tmp/work"
#define OUTDIR         WORKDIR "/out"
#define MAX_REQUEST    (16u * 1024 * 1024) /* request without file contents, headers included */
#define MAX_DEPTH      16                  /* directory levels collected under OUTDIR */
#define MAX_REL        4096u               /* bytes of an artifact's relative name */
#define MAX_SKIPPED    64u                 /* skipped entries reported one by one */
#define MAX_ARGS       1024u
#define MAX_FILES      256u
#define MAX_NAME       255u
#define CHUNK          65536u              /* max payload of one O/E frame */
#define READY_TIMEOUT  15000               /* ms the interpreter may take to start */
#define DRAIN_TIMEOUT  2000                /* ms to wait for pipe EOF after kill(-1) */

/* The child's environment is built from scratch: nothing of ours leaks into user code. */
static char *const child_env[] = {
    "PATH=/usr/local/bin:/usr/bin:/bin",
    "HOME=" WORKDIR,
    "LANG=C.UTF-8",
    "PYTHONUNBUFFERED=1",
    "PYTHONDONTWRITEBYTECODE=1",
    NULL,
};

/* The bootstraps, NUL-terminated, from boot.py and boot.js (see the comments in each). */
__asm__(
    ".pushsection .rodata\n"
    ".type sbx_boot_py, @object\n"
    "sbx_boot_py:\n"
    ".incbin \"boot.py\"\n"
    ".byte 0\n"
    ".type sbx_boot_js, @object\n"
    "sbx_boot_js:\n"
    ".incbin \"boot.js\"\n"
    ".byte 0\n"
    ".popsection\n");
extern const char sbx_boot_py[] __asm__("sbx_boot_py");
extern const char sbx_boot_js[] __asm__("sbx_boot_js");

struct lang {
    const char *name;
    const char *script;     /* where the code is written */
    const char *interp;     /* pre-spawned interpreter; NULL: exec'd at go time */
    const char *flag;       /* how the interpreter takes the bootstrap */
    const char *boot;
};
static const struct lang langs[] = {
    { "python",     WORKDIR "/main.py", "/usr/bin/python3", "-c", sbx_boot_py },
    { "javascript", WORKDIR "/main.js", "/usr/bin/node",    "-e", sbx_boot_js },
    /* dash starts in about a millisecond: it is simply exec'd at go time as `sh main.sh`,
     * which is exactly what running the file directly does. */
    { "shell",      WORKDIR "/main.sh", NULL, NULL, NULL },
};

/* ---------------------------------------------------------------- low-level helpers ---- */

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Output frames go to fd 1. One buffer holds header + payload so a frame is one write and
 * child output can be read straight into the payload area. */
static unsigned char framebuf[5 + CHUNK];

static void frame(char type, const void *payload, uint32_t len)
{
    unsigned char hdr[5];
    hdr[0] = (unsigned char)type;
    put_u32(hdr + 1, len);
    /* If the host stopped reading there is nobody left to report to. */
    if (write_all(1, hdr, 5) < 0 || (len && write_all(1, payload, len) < 0))
        _exit(3);
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* cannot fail with a valid clock id */
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Reaps every exited child without blocking. The main child's status is kept in *main_status
 * (when main_pid is found); everything else is an orphan or a helper of the user code. */
static int reap(pid_t main_pid, int *main_status)
{
    int found = 0, st;
    for (;;) {
        pid_t w = waitpid(-1, &st, WNOHANG);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return found; /* 0: children left but none exited; ECHILD: none left */
        if (w == main_pid) {
            *main_status = st;
            found = 1;
        }
    }
}

/*
 * SIGKILL every process we may signal: all user processes (daemonized grandchildren, fork
 * bombs...); the kernel spares PID 1 and the caller. Repeat until nothing is left so that
 * processes forked during a sweep die too; a zombie still counts for kill(-1) until it is
 * reaped, so reap between sweeps (as PID 1 or subreaper every orphan is ours). Bounded.
 */
static void kill_all(void)
{
    int ignored;
    for (int i = 0; i < 200; i++) {
        int none = kill(-1, SIGKILL) < 0 && errno == ESRCH;
        reap(-1, &ignored);
        if (none)
            return;
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
}

static void fault(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fault(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof msg)
        n = sizeof msg - 1;
    kill_all();
    frame('F', msg, (uint32_t)n);
    _exit(2);
}

/* -------------------------------------------------------------- cgroup counters -------- */

/* Reads "key value" from a flat-keyed cgroup file; -1 when the file or key is missing. */
static long long cg_read(const char *path, const char *key)
{
    char buf[4096];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n;
    do
        n = read(fd, buf, sizeof buf - 1);
    while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    size_t klen = strlen(key);
    for (char *line = buf; line && *line; ) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        /* exact key match: "oom_kill" must not match "oom_kill_disable" */
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ')
            return strtoll(line + klen + 1, NULL, 10);
        line = next;
    }
    return -1;
}

/* cgroup v1 (this deployment) first, then the unified v2 hierarchy. */
static long long oom_count(void)
{
    long long v = cg_read("/sys/fs/cgroup/memory/memory.oom_control", "oom_kill");
    return v >= 0 ? v : cg_read("/sys/fs/cgroup/memory.events", "oom_kill");
}

static long long pids_max_count(void)
{
    long long v = cg_read("/sys/fs/cgroup/pids/pids.events", "max");
    return v >= 0 ? v : cg_read("/sys/fs/cgroup/pids.events", "max");
}

/* -------------------------------------------------------------- request reading -------- */

static struct {
    unsigned char buf[CHUNK];
    size_t pos, len;
    uint64_t total; /* bytes consumed so far, checked against MAX_REQUEST */
} rq;

/* Makes sure the request buffer holds at least one unread byte; a short or broken request is a fault. */
static void rq_fill(void)
{
    while (rq.pos == rq.len) {
        ssize_t n = read(0, rq.buf, sizeof rq.buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            fault("reading request: %s", strerror(errno));
        if (n == 0)
            fault("truncated request");
        rq.pos = 0;
        rq.len = (size_t)n;
    }
}

static void rq_read(void *dst, size_t len)
{
    unsigned char *d = dst;
    if (rq.total + len > MAX_REQUEST)
        fault("request larger than %u bytes", MAX_REQUEST);
    rq.total += len;
    while (len > 0) {
        rq_fill();
        size_t k = rq.len - rq.pos < len ? rq.len - rq.pos : len;
        memcpy(d, rq.buf + rq.pos, k);
        rq.pos += k;
        d += k;
        len -= k;
    }
}

static uint32_t rq_u32(void)
{
    unsigned char b[4];
    rq_read(b, 4);
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Reads a length-prefixed blob; the length is checked before allocating. A NUL is appended
 * so strings can be used directly (the length stays authoritative). */
static char *rq_blob(uint32_t *lenp)
{
    uint32_t len = rq_u32();
    if (rq.total + len > MAX_REQUEST)
        fault("request larger than %u bytes", MAX_REQUEST);
    char *p = malloc((size_t)len + 1);
    if (!p)
        fault("out of memory");
    rq_read(p, len);
    p[len] = '\0';
    *lenp = len;
    return p;
}

static uint64_t rq_u64(void)
{
    uint64_t hi = rq_u32();
    return hi << 32 | rq_u32();
}

/* Copies len bytes of the request straight into fd, a buffer at a time: a file is never held
 * in memory whole, and its bytes count against the host's file budget, not MAX_REQUEST. */
static void rq_copy(int fd, uint64_t len, const char *path)
{
    while (len > 0) {
        rq_fill();
        size_t k = rq.len - rq.pos;
        if (k > len)
            k = (size_t)len;
        if (write_all(fd, rq.buf + rq.pos, k) < 0)
            fault("writing %s: %s", path, strerror(errno)); /* ENOSPC / EFBIG (fsize limit) */
        rq.pos += k;
        len -= k;
    }
}

static void write_file(const char *path, const char *data, size_t len, int excl)
{
    /* O_NOFOLLOW/O_EXCL: never follow or clobber something that was not ours. */
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | (excl ? O_EXCL : O_TRUNC),
                  0644);
    if (fd < 0)
        fault("creating %s: %s", path, strerror(errno));
    if (write_all(fd, data, len) < 0)
        fault("writing %s: %s", path, strerror(errno)); /* ENOSPC / EFBIG (fsize limit) */
    if (close(fd) < 0)
        fault("closing %s: %s", path, strerror(errno));
}

static int valid_name(const char *name, uint32_t len)
{
    if (len == 0 || len > MAX_NAME || memchr(name, '\0', len) || memchr(name, '/', len))
        return 0;
    return strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

/* An artifact name component: valid UTF-8 (no overlongs, no surrogates), no control
 * characters, at most MAX_NAME bytes. The host shows names to people; they must be text. */
static int valid_component(const unsigned char *s, size_t len)
{
    if (len == 0 || len > MAX_NAME)
        return 0;
    for (size_t i = 0; i < len; ) {
        unsigned c = s[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
        if (n == 0 || i + n > len)
            return 0;
        uint32_t cp = n == 2 ? c & 0x1f : n == 3 ? c & 0x0f : c & 0x07;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        if (cp >= 0x80 && cp < 0xa0) /* C1 controls */
            return 0;
        i += n;
    }
    return 1;
}

/* -------------------------------------------------------------- the child -------------- */

struct child {
    pid_t pid;
    int in, out, err;   /* supervisor's ends of the stdio pipes; -1 when closed */
    int ctl;            /* supervisor's end of the go socket (fd 3 in the child); -1 if none */
};

static void xpipe(int p[2])
{
    if (pipe2(p, O_CLOEXEC) < 0)
        fault("pipe: %s", strerror(errno));
}

static void spawn(struct child *c, char *const argv[], int with_ctl)
{
    int in[2], out[2], err[2], ctl[2] = { -1, -1 };
    xpipe(in);
    xpipe(out);
    xpipe(err);
    /* A socketpair rather than a pipe: the bootstrap reports readiness on the same fd. */
    if (with_ctl && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) < 0)
        fault("socketpair: %s", strerror(errno));

    pid_t pid = fork();
    if (pid < 0)
        fault("fork: %s", strerror(errno));
    if (pid == 0) {
        /* Child: only async-signal-safe calls from here to exec. dup2 clears CLOEXEC on
         * the targets; everything else of ours is CLOEXEC or closed below. */
        if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0 ||
            (with_ctl && dup2(ctl[1], 3) < 0))
            _exit(127);
        for (int fd = with_ctl ? 4 : 3; fd < 1024; fd++)
            close(fd);
        /* Undo what we changed for ourselves so user code sees normal defaults
         * (e.g. `yes | head` must die of SIGPIPE as usual). */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGXFSZ, SIG_DFL);
        /* We are non-dumpable (inherited); become dumpable again so our own /proc files are
         * ours, then volunteer as the OOM killer's first victim: a memory hog must not take
         * the supervisor down with it. (exec resets dumpable anyway.) */
        prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
        int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t r = write(fd, "1000", 4);
            (void)r;
            close(fd);
        }
        if (chdir(WORKDIR) < 0)
            _exit(127);
        execve(argv[0], argv, child_env);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    close(err[1]);
    if (with_ctl)
        close(ctl[1]);
    /* stdin is fed from the poll loop: it must never block the supervisor. */
    if (fcntl(in[1], F_SETFL, O_NONBLOCK) < 0)
        fault("fcntl: %s", strerror(errno));
    c->pid = pid;
    c->in = in[1];
    c->out = out[0];
    c->err = err[0];
    c->ctl = with_ctl ? ctl[0] : -1;
}

/* Blocks until the pre-spawned interpreter wrote its readiness byte on fd 3. */
static void wait_ready(struct child *c)
{
    struct pollfd p = { .fd = c->ctl, .events = POLLIN };
    uint64_t deadline = now_us() + (uint64_t)READY_TIMEOUT * 1000;
    for (;;) {
        uint64_t t = now_us();
        if (t >= deadline)
            fault("interpreter did not start within %d ms", READY_TIMEOUT);
        int r = poll(&p, 1, (int)((deadline - t) / 1000 + 1));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            fault("poll: %s", strerror(errno));
        if (r == 0)
            continue;
        char b;
        ssize_t n = read(c->ctl, &b, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 1 && b == 'r')
            return;
        fault("interpreter failed to start");
    }
}

/* -------------------------------------------------------------- output pumping --------- */

struct stream {
    int *fd;
    char type;            /* 'O' or 'E' */
    uint64_t total;       /* produced by the child, including discarded bytes */
    uint64_t forwarded;
};

/* One read: forward up to the cap, count and discard the rest (never stop reading, or the
 * child would block on a full pipe). Closes the fd on EOF. */
static void pump(struct stream *s, uint32_t cap)
{
    ssize_t n = read(*s->fd, framebuf + 5, CHUNK);
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN)
            return;
        fault("reading child output: %s", strerror(errno));
    }
    if (n == 0) {
        close(*s->fd);
        *s->fd = -1;
        return;
    }
    s->total += (uint64_t)n;
    uint64_t room = cap > s->forwarded ? cap - s->forwarded : 0;
    uint32_t fwd = (uint64_t)n < room ? (uint32_t)n : (uint32_t)room;
    if (fwd > 0) {
        framebuf[0] = (unsigned char)s->type;
        put_u32(framebuf + 1, fwd);
        if (write_all(1, framebuf, 5 + (size_t)fwd) < 0)
            _exit(3);
        s->forwarded += fwd;
    }
}

/* -------------------------------------------------------------- the steps of a run ----- */

/* What the host asked for. */
struct request {
    uint32_t timeout_ms, cap;
    uint32_t max_artifacts;
    uint64_t max_artifact, max_artifacts_total, max_input;
    uint32_t nargs;
    char **args;          /* [0], [1] left free for "/bin/sh script"; args[2..] the user's */
    char *in_data;        /* the child's stdin */
    uint32_t in_len;
};

/* What happened, for the 'X' frame. */
struct outcome {
    int status;           /* the main child's wait status */
    int timed_out;
    uint64_t t_go, t_end; /* go, and the main child reaped */
    long long oom0, pids0;
};

/* Step 0: make this process unreachable for user code and ready to reap; returns the
 * signalfd that reports child exits. */
static int setup_process(void)
{
    /* Not dumpable: /proc/<pid>/fd, /mem, ptrace, pidfd_getfd are refused to same-uid code. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        fault("prctl: %s", strerror(errno));
    /* Under an init (docker --init) orphans must still come to us to be reaped and killed. */
    if (getpid() != 1 && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
        fault("prctl: %s", strerror(errno));
    /* A child closing its stdin early must give EPIPE, not kill us; a file write beyond
     * the fsize rlimit must give EFBIG (reported as a fault), not kill us. */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN);

    /* SIGCHLD is consumed through a signalfd so child exit is just another poll event.
     * Blocked before fork; the child unblocks everything before exec. A SIGCHLD sent by
     * user code is only a spurious wake-up: the status comes from waitpid. */
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &chld, NULL) < 0)
        fault("sigprocmask: %s", strerror(errno));
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        fault("signalfd: %s", strerror(errno));

    umask(022);
    if (mkdir(WORKDIR, 0700) < 0 && errno != EEXIST)
        fault("mkdir %s: %s", WORKDIR, strerror(errno));
    return sfd;
}

static const struct lang *choose_lang(int argc, char **argv)
{
    for (size_t i = 0; argc == 2 && i < sizeof langs / sizeof langs[0]; i++)
        if (strcmp(argv[1], langs[i].name) == 0)
            return &langs[i];
    fault("usage: sbx-supervisor python|javascript|shell");
}

/* Step 1: the interpreter starts and warms up before the request exists. */
static void prespawn(const struct lang *L, struct child *c)
{
    char *argv[] = { (char *)L->interp, (char *)L->flag, (char *)L->boot, NULL };
    spawn(c, argv, 1);
    wait_ready(c);
}

/* Step 2: read the request; the files and the code land in WORKDIR. */
static void read_request(const struct lang *L, struct request *r)
{
    char magic[4];
    rq_read(magic, 4);
    if (memcmp(magic, "SBX2", 4) != 0)
        fault("bad magic (this supervisor speaks SBX2)");
    r->timeout_ms = rq_u32();
    r->cap = rq_u32();
    r->max_artifacts = rq_u32();
    r->max_artifact = rq_u64();
    r->max_artifacts_total = rq_u64();
    r->max_input = rq_u64();

    r->nargs = rq_u32();
    if (r->nargs > MAX_ARGS)
        fault("too many arguments (%u > %u)", r->nargs, MAX_ARGS);
    r->args = calloc((size_t)r->nargs + 3, sizeof *r->args);
    if (!r->args)
        fault("out of memory");
    for (uint32_t i = 0; i < r->nargs; i++) {
        uint32_t len;
        r->args[i + 2] = rq_blob(&len);
        if (memchr(r->args[i + 2], '\0', len))
            fault("argument %u contains NUL", i);
    }

    uint32_t nfiles = rq_u32();
    if (nfiles > MAX_FILES)
        fault("too many files (%u > %u)", nfiles, MAX_FILES);
    uint64_t input = 0;
    for (uint32_t i = 0; i < nfiles; i++) {
        uint32_t nlen;
        char *name = rq_blob(&nlen);
        if (!valid_name(name, nlen) || strcmp(name, "out") == 0)
            fault("invalid file name (file %u)", i);
        char path[sizeof WORKDIR + MAX_NAME + 2];
        snprintf(path, sizeof path, "%s/%s", WORKDIR, name);
        if (strcmp(path, L->script) == 0)
            fault("file name %s is reserved for the code", name);
        uint64_t dlen = rq_u64();
        if (dlen > r->max_input - input)
            fault("input files larger than the %llu bytes announced", (unsigned long long)r->max_input);
        input += dlen;
        /* O_NOFOLLOW/O_EXCL: never follow or clobber something that was not ours; O_EXCL
         * also rejects duplicate names. */
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
            fault("creating %s: %s", path, strerror(errno));
        rq_copy(fd, dlen, path);
        if (close(fd) < 0)
            fault("closing %s: %s", path, strerror(errno));
        free(name);
    }

    uint32_t code_len;
    char *code = rq_blob(&code_len);
    write_file(L->script, code, code_len, 0);
    free(code);
    r->in_data = rq_blob(&r->in_len);
    /* The program's output directory: created by us, hence owned by the run's uid. */
    if (mkdir(OUTDIR, 0755) < 0)
        fault("mkdir %s: %s", OUTDIR, strerror(errno));
    /* Anything after the request on our stdin is ignored. */
}

/* Step 3: release the pre-spawned interpreter with "script\0arg\0arg...", or exec the shell. */
static void go(const struct lang *L, struct request *r, struct child *c)
{
    if (!L->interp) {
        r->args[0] = "/bin/sh";
        r->args[1] = (char *)L->script;
        spawn(c, r->args, 0);
        return;
    }
    size_t golen = strlen(L->script);
    for (uint32_t i = 0; i < r->nargs; i++)
        golen += 1 + strlen(r->args[i + 2]);
    char *msg = malloc(golen);
    if (!msg)
        fault("out of memory");
    size_t off = strlen(L->script);
    memcpy(msg, L->script, off);
    for (uint32_t i = 0; i < r->nargs; i++) {
        size_t l = strlen(r->args[i + 2]);
        msg[off++] = '\0';
        memcpy(msg + off, r->args[i + 2], l);
        off += l;
    }
    /* EPIPE here means the interpreter already died: the poll loop reports its exit. */
    if (write_all(c->ctl, msg, golen) < 0 && errno != EPIPE)
        fault("sending go: %s", strerror(errno));
    close(c->ctl); /* EOF terminates the go message */
    c->ctl = -1;
    free(msg);
}

/* Step 4: pump stdio and enforce the deadline until the main child has been reaped. */
static void run(struct request *r, struct child *c, int sfd, struct stream *sout,
                struct stream *serr, struct outcome *o)
{
    size_t in_off = 0;
    if (r->in_len == 0) {
        close(c->in);
        c->in = -1;
    }
    uint64_t deadline = r->timeout_ms ? o->t_go + (uint64_t)r->timeout_ms * 1000 : 0;
    for (;;) {
        int tmo = -1;
        if (deadline && !o->timed_out) {
            uint64_t t = now_us();
            if (t >= deadline) {
                /* Kill everything; the main child's SIGCHLD then ends the loop. */
                kill(-1, SIGKILL);
                o->timed_out = 1;
            } else {
                tmo = (int)((deadline - t + 999) / 1000);
            }
        }
        struct pollfd p[4] = {
            { .fd = c->out, .events = POLLIN },
            { .fd = c->err, .events = POLLIN },
            { .fd = c->in,  .events = POLLOUT }, /* fd -1 is ignored by poll */
            { .fd = sfd,    .events = POLLIN },
        };
        int n = poll(p, 4, tmo);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fault("poll: %s", strerror(errno));
        }
        if (p[0].revents)
            pump(sout, r->cap);
        if (p[1].revents)
            pump(serr, r->cap);
        if (p[2].revents && c->in >= 0) {
            size_t left = r->in_len - in_off;
            ssize_t w = write(c->in, r->in_data + in_off, left < CHUNK ? left : CHUNK);
            if (w >= 0)
                in_off += (size_t)w;
            else if (errno != EINTR && errno != EAGAIN)
                in_off = r->in_len; /* EPIPE: the child closed its stdin; drop the rest */
            if (in_off == r->in_len) {
                close(c->in);
                c->in = -1;
            }
        }
        if (p[3].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) > 0)
                ;
            if (reap(c->pid, &o->status)) {
                o->t_end = now_us();
                return;
            }
        }
    }
}

/* Step 5: no survivors, then drain what they wrote before dying. */
static void end_all(struct child *c, struct stream *sout, struct stream *serr, uint32_t cap)
{
    kill_all();
    if (c->in >= 0) {
        close(c->in);
        c->in = -1;
    }
    uint64_t drain_end = now_us() + (uint64_t)DRAIN_TIMEOUT * 1000;
    while (c->out >= 0 || c->err >= 0) {
        uint64_t t = now_us();
        if (t >= drain_end)
            break; /* should not happen once everything is dead; never hang on it */
        struct pollfd p[2] = { { .fd = c->out, .events = POLLIN }, { .fd = c->err, .events = POLLIN } };
        int n = poll(p, 2, (int)((drain_end - t) / 1000 + 1));
        if (n < 0 && errno != EINTR)
            fault("poll: %s", strerror(errno));
        if (n > 0 && p[0].revents)
            pump(sout, cap);
        if (n > 0 && p[1].revents)
            pump(serr, cap);
    }
}

/* ---------------------------------------------------------------- artifacts ----------- */

struct harvest {
    const struct request *r;
    uint32_t count;       /* artifacts sent */
    uint64_t total;       /* their bytes */
    uint32_t skipped;     /* entries reported as skipped, one by one */
    uint32_t unlisted;    /* skipped beyond MAX_SKIPPED: counted, reported once */
};

/* 'S': reason, NUL, the relative name as found (the host escapes what is not text). */
static void skip(struct harvest *h, const char *reason, const char *rel, size_t rlen)
{
    if (h->skipped >= MAX_SKIPPED) {
        h->unlisted++;
        return;
    }
    h->skipped++;
    size_t n = strlen(reason);
    memcpy(framebuf + 5, reason, n + 1);
    if (rlen > CHUNK - n - 1)
        rlen = CHUNK - n - 1;
    memcpy(framebuf + 5 + n + 1, rel, rlen);
    frame('S', framebuf + 5, (uint32_t)(n + 1 + rlen));
}

/* 'A' (u64 size, name), 'D' chunks, 'Z' (u64 bytes sent). fd is a regular file opened
 * without following links; everything that could write to it is dead. */
static void send_artifact(struct harvest *h, int fd, uint64_t size, const char *rel, size_t rlen)
{
    unsigned char hdr[8 + MAX_REL];
    put_u32(hdr, (uint32_t)(size >> 32));
    put_u32(hdr + 4, (uint32_t)size);
    memcpy(hdr + 8, rel, rlen);
    frame('A', hdr, (uint32_t)(8 + rlen));
    uint64_t sent = 0;
    while (sent < size) {
        size_t want = size - sent < CHUNK ? (size_t)(size - sent) : CHUNK;
        ssize_t n = read(fd, framebuf + 5, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* shorter than at fstat: Z says how much came */
        frame('D', framebuf + 5, (uint32_t)n);
        sent += (uint64_t)n;
    }
    put_u32(hdr, (uint32_t)(sent >> 32));
    put_u32(hdr + 4, (uint32_t)sent);
    frame('Z', hdr, 8);
    h->count++;
    h->total += sent;
}

/* Walks one directory (dfd is ours to close). rel/rlen: its relative name, "" at the top. */
static void harvest_dir(struct harvest *h, int dfd, char *rel, size_t rlen, int depth)
{
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        skip(h, "unreadable", rel, rlen);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        size_t nlen = strlen(e->d_name);
        size_t full = rlen + (rlen ? 1 : 0) + nlen;
        if (full >= MAX_REL) {
            skip(h, "bad_name", rel, rlen);
            continue;
        }
        char *at = rel + rlen;
        if (rlen)
            *at++ = '/';
        memcpy(at, e->d_name, nlen + 1);
        if (!valid_component((const unsigned char *)e->d_name, nlen)) {
            skip(h, "bad_name", rel, full);
        } else {
            struct stat st;
            if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                skip(h, "unreadable", rel, full);
            else if (S_ISLNK(st.st_mode))
                skip(h, "symlink", rel, full);
            else if (S_ISFIFO(st.st_mode))
                skip(h, "fifo", rel, full);
            else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
                skip(h, "device", rel, full);
            else if (S_ISSOCK(st.st_mode))
                skip(h, "socket", rel, full);
            else if (S_ISDIR(st.st_mode)) {
                int sub = depth >= MAX_DEPTH ? -1
                    : openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (sub < 0)
                    skip(h, depth >= MAX_DEPTH ? "too_deep" : "unreadable", rel, full);
                else
                    harvest_dir(h, sub, rel, full, depth + 1);
            } else {
                /* O_NOFOLLOW + fstat on the opened fd: what is read is what was checked. */
                int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
                struct stat fst;
                if (fd < 0 || fstat(fd, &fst) < 0)
                    skip(h, "unreadable", rel, full);
                else if (!S_ISREG(fst.st_mode))
                    skip(h, "not_regular", rel, full);
                else if (h->count >= h->r->max_artifacts)
                    skip(h, "count_cap", rel, full);
                else if ((uint64_t)fst.st_size > h->r->max_artifact)
                    skip(h, "file_cap", rel, full);
                else if ((uint64_t)fst.st_size > h->r->max_artifacts_total - h->total)
                    skip(h, "total_cap", rel, full);
                else
                    send_artifact(h, fd, (uint64_t)fst.st_size, rel, full);
                if (fd >= 0)
                    close(fd);
            }
        }
        rel[rlen] = '\0';
    }
    closedir(d);
}

/* Step 6: every process is dead, so OUTDIR can no longer change: send what it holds. */
static void harvest(const struct request *r)
{
    struct harvest h = { r, 0, 0, 0, 0 };
    static char rel[MAX_REL + 1];
    int dfd = open(OUTDIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        if (errno != ENOENT)
            skip(&h, "unreadable", "", 0); /* replaced by a symlink or a file, or chmod 0 */
        return;
    }
    rel[0] = '\0';
    harvest_dir(&h, dfd, rel, 0, 0);
    if (h.unlisted) {
        char n[24];
        int k = snprintf(n, sizeof n, "%u", h.unlisted);
        h.skipped = 0; /* this one summary is always sent */
        skip(&h, "unlisted", n, (size_t)k);
    }
}

/* Step 7: the 'X' frame. */
static void report(const struct outcome *o, const struct stream *sout, const struct stream *serr,
                   uint32_t cap)
{
    struct rusage ru;
    if (getrusage(RUSAGE_CHILDREN, &ru) < 0)
        memset(&ru, 0, sizeof ru);

    long long oom1 = oom_count(), pids1 = pids_max_count();
    int sig = WIFSIGNALED(o->status) ? WTERMSIG(o->status) : 0;
    /* Only the counter is evidence: user code can SIGKILL itself, and without a counter
     * (gVisor has none; its memory limit kills the whole sandbox, so no 'X' is sent) an
     * OOM kill cannot be told from that. Unknown is reported as 0, never guessed. */
    int oom_killed = o->oom0 >= 0 && oom1 >= 0 && oom1 > o->oom0;
    /* Without a pids.events counter there is no reliable signal (fork just fails with
     * EAGAIN inside the user code), so it is reported as 0. */
    int pids_hit = o->pids0 >= 0 && pids1 >= 0 && pids1 > o->pids0;

    char x[1024];
    int n = snprintf(x, sizeof x,
        "exit_code=%d\nsignal=%d\ntimed_out=%d\noom_killed=%d\npids_limit_hit=%d\n"
        "stdout_bytes=%llu\nstderr_bytes=%llu\nstdout_truncated=%d\nstderr_truncated=%d\n"
        "wall_us=%llu\ncpu_user_us=%llu\ncpu_sys_us=%llu\nmax_rss_kb=%ld\n",
        WIFEXITED(o->status) ? WEXITSTATUS(o->status) : -1, sig, o->timed_out, oom_killed,
        pids_hit, (unsigned long long)sout->total, (unsigned long long)serr->total,
        sout->total > cap, serr->total > cap,
        (unsigned long long)(o->t_end - o->t_go),
        (unsigned long long)ru.ru_utime.tv_sec * 1000000ull + (unsigned long long)ru.ru_utime.tv_usec,
        (unsigned long long)ru.ru_stime.tv_sec * 1000000ull + (unsigned long long)ru.ru_stime.tv_usec,
        ru.ru_maxrss);
    if (n < 0 || (size_t)n >= sizeof x)
        fault("exit report too long");
    frame('X', x, (uint32_t)n);
}

int main(int argc, char **argv)
{
    int sfd = setup_process();
    const struct lang *L = choose_lang(argc, argv);

    struct child c = { -1, -1, -1, -1, -1 };
    if (L->interp)
        prespawn(L, &c);
    frame('R', NULL, 0);

    struct request r;
    read_request(L, &r);

    struct outcome o = { 0 };
    o.oom0 = oom_count();
    o.pids0 = pids_max_count();
    o.t_go = now_us();
    go(L, &r, &c);

    struct stream sout = { &c.out, 'O', 0, 0 }, serr = { &c.err, 'E', 0, 0 };
    run(&r, &c, sfd, &sout, &serr, &o);
    end_all(&c, &sout, &serr, r.cap);
    harvest(&r);
    report(&o, &sout, &serr, r.cap);
    return 0;
}
