"""The main module looks as it does when the file is run directly."""
import sys
import __main__
print(__name__, __file__, __doc__, __package__, __spec__, __cached__)
print(type(__loader__).__name__, __loader__.name, __loader__.path)
print(sorted(globals()))
print(__main__.__dict__ is globals(), sys.modules['__main__'] is __main__)
print(sys.argv, sys.path[0], sys.flags.optimize, sys.flags.dont_write_bytecode)
