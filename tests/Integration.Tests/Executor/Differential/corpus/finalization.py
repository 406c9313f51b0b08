import atexit
import threading
import time


class Noisy:
    def __del__(self):
        print('__del__ of a global')


def late():
    time.sleep(0.05)
    print('non-daemon thread finished')


atexit.register(print, 'atexit handler')
threading.Thread(target=late).start()
keep = Noisy()
log = open('/tmp/work/log.txt', 'w')
log.write('unflushed')
print('main done')
