import sys
sys.exit('a message instead of a code')
