echo before
exit 3
