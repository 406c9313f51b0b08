import atexit
atexit.register(lambda: print('atexit ran'))
print('working', flush=True)
raise KeyboardInterrupt
