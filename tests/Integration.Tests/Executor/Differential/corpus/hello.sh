echo "hello from $0 with $# args"
echo 'to stderr' >&2
printf 'no newline at the end'
