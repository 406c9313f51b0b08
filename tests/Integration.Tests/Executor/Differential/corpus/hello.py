import sys
print('héllo wörld ✓')
print('to stderr', file=sys.stderr)
sys.stdout.write('no newline at the end')
