#!/usr/bin/env python3
"""Smoke test for the sandbox runtime images and sbx-supervisor (host python3, stdlib only).

Starts containers with the production sandbox flags, speaks the SBX2 protocol, and checks
behaviour end to end. Usage: python3 smoke.py [-k substring] [--runs N] [--tag T] [--init]
(--tag: image tag, default $SBX_IMAGE_TAG or current; --init: under docker --init, as before
the supervisor became PID 1, for comparisons).
"""
import argparse
import os
import select
import struct
import subprocess
import sys
import time

FLAGS = [
    "-i", "--rm", "--network", "none", "--read-only",
    "--tmpfs", "/tmp:rw,nosuid,nodev,size=16m,mode=1777",
    "--tmpfs", "/dev/shm:rw,nosuid,nodev,noexec,size=1m,mode=1777",
    "--user", "65534:65534", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
    "--memory", "128m", "--memory-swap", "128m", "--pids-limit", "64", "--cpus", "1",
    "--ulimit", "nofile=256:256", "--ulimit", "fsize=16777216:16777216", "--ulimit", "msgqueue=0:0",
]
TAG = os.environ.get("SBX_IMAGE_TAG", "current")


def u32(n):
    return struct.pack(">I", n)


def blob(b):
    if isinstance(b, str):
        b = b.encode()
    return u32(len(b)) + b


def u64(n):
    return struct.pack(">Q", n)


def header(timeout_ms=10000, cap=1 << 20, files_total=0):
    # artifact caps: 64 files, 64 MiB each, 64 MiB in all
    return b"SBX2" + u32(timeout_ms) + u32(cap) + u32(64) + u64(64 << 20) + u64(64 << 20) + u64(files_total)


def request(code, args=(), files=None, stdin=b"", timeout_ms=10000, cap=1 << 20):
    files = {n: (c.encode() if isinstance(c, str) else c) for n, c in (files or {}).items()}
    out = header(timeout_ms, cap, sum(len(c) for c in files.values())) + u32(len(args))
    out += b"".join(blob(a) for a in args)
    out += u32(len(files))
    for name, content in files.items():
        out += blob(name) + u64(len(content)) + content
    return out + blob(code) + blob(stdin)


class Sandbox:
    """One container = one run."""

    def __init__(self, lang, extra_flags=()):
        self.lang = lang
        cmd = ["docker", "run", *FLAGS, *extra_flags, f"sbx-{lang}:{TAG}", "sbx-supervisor", lang]
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, bufsize=0)
        self.buf = b""

    def _fill(self, deadline):
        fd = self.p.stdout.fileno()
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError("no frame in time")
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            raise EOFError("container stdout closed; stderr: "
                           + self.p.stderr.read().decode(errors="replace"))
        self.buf += chunk

    def frame(self, deadline):
        while len(self.buf) < 5:
            self._fill(deadline)
        t, n = self.buf[0:1].decode(), struct.unpack(">I", self.buf[1:5])[0]
        while len(self.buf) < 5 + n:
            self._fill(deadline)
        payload, self.buf = self.buf[5:5 + n], self.buf[5 + n:]
        return t, payload

    def wait_ready(self, timeout=30):
        t, p = self.frame(time.monotonic() + timeout)
        if t != "R":
            raise RuntimeError(f"expected R, got {t} {p!r}")

    def run(self, req, timeout=60):
        """Sends the request; returns result dict with stdout, stderr, exit info, latency."""
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        self.p.stdin.write(req)
        self.p.stdin.flush()
        res = {"stdout": bytearray(), "stderr": bytearray(), "frames": 0}
        while True:
            t, p = self.frame(deadline)
            res["frames"] += 1
            if t == "O":
                res["stdout"] += p
            elif t == "E":
                res["stderr"] += p
            elif t == "X":
                res["latency_ms"] = (time.monotonic() - t0) * 1000
                for line in p.decode().splitlines():
                    k, v = line.split("=", 1)
                    res[k] = int(v)
                break
            elif t == "F":
                res["fault"] = p.decode(errors="replace")
                break
            else:
                raise RuntimeError(f"unexpected frame {t}")
        try:
            self.p.stdin.close()
        except OSError:
            pass
        t1 = time.monotonic()
        self.p.wait(timeout=30)
        res["container_exit_ms"] = (time.monotonic() - t1) * 1000
        res["container_rc"] = self.p.returncode
        return res


def run(lang, code, **kw):
    extra = kw.pop("extra_flags", ())
    timeout = kw.pop("host_timeout", 60)
    sb = Sandbox(lang, extra)
    sb.wait_ready()
    return sb.run(request(code, **kw), timeout=timeout)


def show(name, r):
    keys = ["exit_code", "signal", "timed_out", "oom_killed", "pids_limit_hit", "stdout_bytes",
            "stderr_bytes", "stdout_truncated", "stderr_truncated", "wall_us", "cpu_user_us",
            "cpu_sys_us", "max_rss_kb"]
    info = " ".join(f"{k}={r[k]}" for k in keys if k in r)
    if "fault" in r:
        info = "FAULT " + r["fault"]
    so = bytes(r["stdout"][:60])
    se = bytes(r["stderr"][-120:])
    print(f"  {name}: {info} latency={r.get('latency_ms', 0):.1f}ms stdout={so!r} stderr_tail={se!r}")


# ------------------------------------------------------------------ checks ----------------
CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


@check
def hello():
    for lang, code in [("python", "import json; print(json.loads('\"hello\"'))"), ("javascript", "console.log('hello')"),
                       ("shell", "echo hello")]:
        r = run(lang, code)
        show(f"hello/{lang}", r)
        assert r["exit_code"] == 0 and bytes(r["stdout"]) == b"hello\n", r
        assert r["container_rc"] == 0, r


@check
def exit_code():
    for lang, code in [("python", "import sys; sys.exit(3)"), ("javascript", "process.exit(3)"),
                       ("shell", "exit 3")]:
        r = run(lang, code)
        show(f"exit3/{lang}", r)
        assert r["exit_code"] == 3 and r["signal"] == 0, r


@check
def stdin_echo():
    data = os.urandom(1 << 19).hex().encode()  # 1 MiB
    for lang, code in [
        ("python", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"),
        ("javascript", "process.stdin.pipe(process.stdout)"),
        ("shell", "cat"),
    ]:
        r = run(lang, code, stdin=data, cap=2 << 20)
        show(f"stdin/{lang}", r)
        assert bytes(r["stdout"]) == data and r["exit_code"] == 0, r


@check
def stdin_ignored():
    # child never reads a large stdin: must not block or crash the supervisor
    r = run("python", "print('ok')", stdin=b"x" * (4 << 20))
    show("stdin-ignored/python", r)
    assert r["exit_code"] == 0 and bytes(r["stdout"]) == b"ok\n", r


@check
def args_and_files():
    files = {"data.txt": "payload", ".hidden": "h"}
    for lang, code in [
        ("python", "import sys\nprint(sys.argv)\nprint(open('data.txt').read(), open('.hidden').read())\n"
                   "import os; print(os.getcwd(), __name__, sys.path[0])"),
        ("javascript", "const fs=require('fs'); console.log(JSON.stringify(process.argv.slice(1)));"
                       "console.log(fs.readFileSync('data.txt','utf8'), fs.readFileSync('.hidden','utf8'));"
                       "console.log(process.cwd(), require.main === module)"),
        ("shell", "echo \"$0\" \"$#\" \"$1\" \"$2\"; cat data.txt .hidden; echo; pwd"),
    ]:
        r = run(lang, code, args=["a b", "c"], files=files)
        show(f"args/{lang}", r)
        out = bytes(r["stdout"]).decode()
        assert r["exit_code"] == 0 and "payload" in out and "a b" in out, r
        if lang == "python":
            assert "['/tmp/work/main.py', 'a b', 'c']" in out and "/tmp/work __main__ /tmp/work" in out, out
        if lang == "javascript":
            assert '["/tmp/work/main.js","a b","c"]' in out and "/tmp/work true" in out, out
        if lang == "shell":
            assert out.startswith("/tmp/work/main.sh 2 a b c"), out


@check
def env_clean():
    r = run("python", "import os; print(sorted(os.environ.items()))")
    show("env/python", r)
    out = bytes(r["stdout"]).decode()
    assert "HOME" in out and "HOSTNAME" not in out, out


@check
def bad_requests():
    for name, req in [
        ("bad magic", b"XXXX" + b"\0" * 40),
        ("slash in name", request("print(1)", files={"../x": "y"})),
        ("dotdot", request("print(1)", files={"..": "y"})),
        ("empty name", request("print(1)", files={"": "y"})),
        ("NUL in name", request("print(1)", files={"a\0b": "y"})),
        ("oversized", header(0, 0) + u32(0) + u32(0) + u32(17 << 20)),
        ("over announced input", header(0, 0, 1) + u32(0) + u32(1) + blob("a") + u64(2) + b"xy"),
        ("truncated", b"SBX2" + u32(0)),
    ]:
        sb = Sandbox("python")
        sb.wait_ready()
        if name == "truncated":
            sb.p.stdin.write(req)
            sb.p.stdin.close()
            t, p = sb.frame(time.monotonic() + 30)
            r = {"fault": p.decode()} if t == "F" else {}
            sb.p.wait(30)
            r["container_rc"] = sb.p.returncode
        else:
            r = sb.run(req)
        print(f"  reject/{name}: {r.get('fault')!r} rc={r['container_rc']}")
        assert "fault" in r and r["container_rc"] == 2, r


@check
def exception():
    r = run("python", "def f():\n    raise ValueError('boom')\nf()\n")
    show("exception/python", r)
    err = bytes(r["stderr"]).decode()
    assert r["exit_code"] == 1 and "Traceback" in err and "ValueError: boom" in err, r
    assert 'File "/tmp/work/main.py", line 3' in err and "runpy" not in err and "<string>" not in err, err
    r = run("python", "x = (\n")
    show("syntaxerror/python", r)
    assert r["exit_code"] == 1 and "SyntaxError" in bytes(r["stderr"]).decode(), r
    r = run("javascript", "function f(){ throw new Error('boom') }\nf()\n")
    show("exception/javascript", r)
    err = bytes(r["stderr"]).decode()
    assert r["exit_code"] != 0 and "Error: boom" in err and "/tmp/work/main.js:1" in err, r
    r = run("shell", "set -e\nfalse\necho unreachable")
    show("set-e/shell", r)
    assert r["exit_code"] == 1 and not r["stdout"], r


@check
def timeout():
    for lang, code in [("python", "while True: pass"), ("javascript", "for(;;){}"),
                       ("shell", "while :; do :; done")]:
        t = time.monotonic()
        r = run(lang, code, timeout_ms=500)
        el = time.monotonic() - t
        show(f"timeout/{lang}", r)
        assert r["timed_out"] == 1 and r["signal"] == 9 and r["oom_killed"] == 0, r
        assert 500_000 <= r["wall_us"] < 700_000, r
        assert r["latency_ms"] < 1000, r


@check
def output_cap():
    cap = 64 * 1024
    for lang, code in [
        ("python", "import sys\nfor _ in range(160): sys.stdout.write('x' * 65536)\nsys.stderr.write('e' * 100000)"),
        ("javascript", "const b='x'.repeat(65536); for(let i=0;i<160;i++) process.stdout.write(b);"
                       "process.stderr.write('e'.repeat(100000))"),
        ("shell", "head -c 10485760 /dev/zero; head -c 100000 /dev/zero >&2"),
    ]:
        r = run(lang, code, cap=cap)
        show(f"cap/{lang}", r)
        assert r["exit_code"] == 0, r
        assert r["stdout_bytes"] == 10485760 and r["stdout_truncated"] == 1 and len(r["stdout"]) == cap, r
        assert r["stderr_bytes"] == 100000 and r["stderr_truncated"] == 1 and len(r["stderr"]) == cap, r


@check
def fork_bomb():
    for lang, code in [
        ("python", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"),
        ("shell", "b() { b | b & }; b; sleep 2"),
    ]:
        t = time.monotonic()
        r = run(lang, code, timeout_ms=3000)
        show(f"forkbomb/{lang}", r)
        assert r["pids_limit_hit"] == 1 and "exit_code" in r, r
        assert time.monotonic() - t < 15, "slow"


@check
def oom():
    for lang, code in [
        ("python", "x = []\nwhile True: x.append(bytearray(1 << 20))"),
        ("javascript", "const a=[]; for(;;) a.push(Buffer.alloc(1<<20, 1))"),
    ]:
        r = run(lang, code, timeout_ms=20000)
        show(f"oom/{lang}", r)
        # node may die of its own heap limit instead if V8's limit is lower than the cgroup's
        assert r["oom_killed"] == 1 and r["signal"] == 9 and r["timed_out"] == 0, r


@check
def self_kill():
    # A SIGKILL is the OOM killer's only when the cgroup counter says so; gVisor has no counter inside.
    for flags in [(), ("--runtime", "runsc")]:
        for lang, code in [
            ("python", "import os\nprint('before', flush=True)\nos.kill(os.getpid(), 9)"),
            ("javascript", "console.log('before'); process.kill(process.pid, 'SIGKILL')"),
            ("shell", "echo before; kill -9 $$"),
        ]:
            r = run(lang, code, timeout_ms=10000, extra_flags=flags)
            show(f"self_kill/{lang}{'/runsc' if flags else ''}", r)
            assert r["signal"] == 9 and r["oom_killed"] == 0 and r["timed_out"] == 0, r
            assert bytes(r["stdout"]) == b"before\n", r
    # A child the OOM killer takes is counted although the program itself exits 0.
    hog = "x = []\\nwhile True: x.append(bytearray(1 << 20))"
    r = run("python", f"import subprocess, sys\nprint(subprocess.run([sys.executable, '-c', '{hog}']).returncode)",
            timeout_ms=20000)
    show("self_kill/child_oom", r)
    assert r["exit_code"] == 0 and r["oom_killed"] == 1 and bytes(r["stdout"]) == b"-9\n", r


@check
def daemon():
    code = ("import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            "        time.sleep(60)\n"      # keeps stdout/stderr open
            "    os._exit(0)\n"
            "print('parent done')\n")
    t = time.monotonic()
    r = run("python", code, timeout_ms=0)
    el = time.monotonic() - t
    show("daemon/python", r)
    assert r["exit_code"] == 0 and r["timed_out"] == 0 and r["latency_ms"] < 1000, r
    assert el < 10, el
    r = run("shell", "(trap '' HUP; sleep 60) & echo started", timeout_ms=0)
    show("daemon/shell", r)
    assert r["exit_code"] == 0 and r["latency_ms"] < 1000, r


@check
def closed_stdout():
    r = run("python", "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(60)", timeout_ms=500)
    show("closed-stdout/python", r)
    assert r["timed_out"] == 1 and r["latency_ms"] < 1500, r


@check
def sandbox_properties():
    code = ("import os\n"
            "print(os.getuid(), os.getgid())\n"
            "try:\n    open('/etc/x', 'w')\nexcept OSError as e:\n    print('rofs', e.errno)\n"
            "pp = os.getppid()\n"
            "try:\n    print(os.listdir(f'/proc/{pp}/fd'))\nexcept OSError as e:\n    print('fd', e.errno)\n"
            "print(open(f'/proc/{pp}/status').read().count('\\n') > 0)\n"
            "print(open('/proc/self/oom_score_adj').read().strip())\n")
    r = run("python", code)
    show("props/python", r)
    out = bytes(r["stdout"]).decode().split("\n")
    assert out[0] == "65534 65534" and out[1] == "rofs 30" and out[2] == "fd 13" and out[4] == "1000", out



@check
def forgery():
    """Frames written to the container's stdout through /proc/1 must not reach the host."""
    code = ("import os, struct\n"
            "x = b'exit_code=0\\nwall_us=1\\n'\n"
            "try:\n    fd = os.open('/proc/1/fd/1', os.O_WRONLY)\n"
            "    os.write(fd, b'O' + struct.pack('>I', 7) + b'forged\\n' + b'X' + struct.pack('>I', len(x)) + x)\n"
            "except OSError as e:\n    print('refused', e.errno)\n"
            "os._exit(3)\n")
    r = run("python", code)
    show("forgery/python", r)
    assert r["exit_code"] == 3 and bytes(r["stdout"]) == b"refused 13\n", r

def latency(runs):
    for lang, code in [("python", "print(1)"), ("javascript", "console.log(1)"), ("shell", "echo 1")]:
        lat, walls = [], []
        for _ in range(runs):
            sb = Sandbox(lang)
            sb.wait_ready()
            r = sb.run(request(code))
            assert bytes(r["stdout"]) == b"1\n", r
            lat.append(r["latency_ms"])
            walls.append(r["wall_us"] / 1000)
        lat.sort()
        walls.sort()
        print(f"  latency/{lang} (request -> X, {runs} runs): p50={lat[len(lat)//2]:.1f}ms "
              f"min={lat[0]:.1f}ms max={lat[-1]:.1f}ms; in-container wall p50={walls[len(walls)//2]:.1f}ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", default="")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--tag", default=None)
    ap.add_argument("--init", action="store_true")
    a = ap.parse_args()
    global TAG
    TAG = a.tag or TAG
    if a.init:
        FLAGS.insert(2, "--init")
    failed = 0
    for fn in CHECKS:
        if a.k not in fn.__name__:
            continue
        print(f"[{fn.__name__}]")
        try:
            fn()
            print(f"  PASS")
        except Exception as e:  # noqa: BLE001 - report and continue
            failed += 1
            print(f"  FAIL: {type(e).__name__}: {str(e)[:800]}")
    if a.k in "latency":
        print("[latency]")
        latency(a.runs)
    print("ALL PASSED" if not failed else f"{failed} CHECK(S) FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
