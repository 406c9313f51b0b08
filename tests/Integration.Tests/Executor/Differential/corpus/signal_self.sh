echo terminating myself
kill -TERM $$
