# Python bootstrap of sbx-supervisor, run as `python3 -c` before the request arrives.
#
# It reports readiness on fd 3, blocks until the go message arrives ("path\0arg\0arg..."
# ended by EOF), then runs the file the way `python3 path args...` does: in a fresh
# __main__ module with the usual globals, sys.argv and sys.path[0], exit codes unchanged.
# The module's code object is called as a function (a Python-to-Python call adds one frame,
# exec() adds two), so user code has one frame less than directly, not three.
# The end follows Py_FinalizeEx's order minus the teardown of modules and heap (~8 ms for
# nothing; the process is gone anyway): wait for non-daemon threads, run atexit handlers,
# flush stdout/stderr, clear __main__'s globals (underscored names first) and collect the
# young generations so __del__ methods run and unclosed files are flushed, restore the
# original std streams and flush again (a failed flush gives 120), then _exit. An uncaught
# KeyboardInterrupt ends, as in CPython, by dying of SIGINT after that sequence.
import os
import sys
import types
import builtins
import atexit
import gc
from importlib.machinery import SourceFileLoader


def _sbx_wait_for_go():
    os.write(3, b'r')
    message = bytearray()
    while True:
        chunk = os.read(3, 65536)
        if not chunk:
            break
        message += chunk
    os.close(3)
    return [os.fsdecode(x) for x in bytes(message).split(b'\0')]


def _sbx_prepare(argv):
    """A fresh __main__ module for the file; returns its globals and its code as a function."""
    path = argv[0]
    sys.argv = argv
    sys.path[0] = os.path.dirname(path)
    main = types.ModuleType('__main__')
    g = main.__dict__
    g.update(__loader__=SourceFileLoader('__main__', path), __annotations__={},
             __builtins__=builtins, __file__=path, __cached__=None)
    sys.modules['__main__'] = main
    with open(path, 'rb') as f:
        source = f.read()
    return g, types.FunctionType(compile(source, path, 'exec'), g)


def _sbx_status_of(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xff
    try:
        print(code, file=sys.stderr)
    except BaseException:
        pass
    return 1


def _sbx_report(e, path):
    """Prints the traceback from the user's first frame on, as a direct run does."""
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != path:
        tb = tb.tb_next
    sys.excepthook(type(e), e.with_traceback(tb), tb)


def _sbx_flush_std():
    ok = True
    for f in (sys.stdout, sys.stderr):
        try:
            if f is not None and not getattr(f, 'closed', False):
                f.flush()
        except BaseException:
            ok = False
    return ok


def _sbx_finish(g, status, interrupted):
    threading = sys.modules.get('threading')
    if threading is not None:
        try:
            threading._shutdown()
        except BaseException:
            pass
    atexit._run_exitfuncs()
    if not _sbx_flush_std():
        status = 120
    if g is not None:
        for name in sorted(g, key=lambda n: not (isinstance(n, str) and n.startswith('_'))):
            if name != '__builtins__':
                try:
                    del g[name]
                except BaseException:
                    pass
    gc.collect(1)
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    if not _sbx_flush_std():
        status = 120
    if interrupted:
        import signal
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(status)


_sbx_argv = _sbx_wait_for_go()
_sbx_g = None
try:
    _sbx_g, _sbx_main = _sbx_prepare(_sbx_argv)
    _sbx_main()
except SystemExit as _sbx_e:
    _sbx_finish(_sbx_g, _sbx_status_of(_sbx_e.code), False)
except BaseException as _sbx_e:
    _sbx_report(_sbx_e, _sbx_argv[0])
    _sbx_finish(_sbx_g, 1, isinstance(_sbx_e, KeyboardInterrupt))
_sbx_finish(_sbx_g, 0, False)
