import sys


def down(n):
    try:
        return down(n + 1)
    except RecursionError:
        return n


print(down(1), sys.getrecursionlimit())
