#!/usr/bin/env python3
"""Reads the runtime catalogue (runtimes/*.yaml) for build-images.sh.

The files use a small YAML subset (scalars, flow lists, block lists, comments); the service parses the same
files with a full YAML parser, so anything outside the subset is refused here rather than read differently.
  catalogue.py DIR ids             every runtime id, sorted
  catalogue.py DIR get ID FIELD    one field (packages: comma-separated)
"""
import os
import re
import sys

KEYS = {"id", "language", "base", "packages", "description"}
LANGUAGES = {"python", "javascript", "shell"}


def fail(message):
    sys.stderr.write(f"catalogue: {message}\n")
    sys.exit(2)


def scalar(text, where):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text[:1] in "[]{}&*!|>%@`":
        fail(f"{where}: unsupported YAML value {text!r}")
    return text


def parse(path):
    entry, key = {}, None
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            where = f"{path}:{number}"
            line = re.sub(r"(^|\s)#.*$", "", raw.rstrip("\n")).rstrip()
            if not line:
                continue
            item = re.match(r"^\s+-\s+(.*)$", line)
            if item:
                if key != "packages":
                    fail(f"{where}: a list item outside 'packages'")
                entry["packages"].append(scalar(item.group(1), where))
                continue
            field = re.match(r"^([A-Za-z]+):\s*(.*)$", line)
            if not field:
                fail(f"{where}: expected 'key: value'")
            key, value = field.group(1), field.group(2)
            if key not in KEYS:
                fail(f"{where}: unknown key '{key}' (allowed: {', '.join(sorted(KEYS))})")
            if key in entry:
                fail(f"{where}: '{key}' is set twice")
            if key == "packages":
                if value == "":
                    entry[key] = []
                elif value.startswith("[") and value.endswith("]"):
                    inner = value[1:-1].strip()
                    entry[key] = [scalar(p, where) for p in inner.split(",")] if inner else []
                else:
                    fail(f"{where}: 'packages' must be a list")
            else:
                entry[key] = scalar(value, where)
    for required in ("id", "language", "base", "packages"):
        if required not in entry:
            fail(f"{path}: '{required}' is required")
    name = os.path.splitext(os.path.basename(path))[0]
    if entry["id"] != name:
        fail(f"{path}: id '{entry['id']}' must equal the file name '{name}'")
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,31}", entry["id"]):
        fail(f"{path}: id must be lowercase letters, digits and '-' (at most 32)")
    if entry["language"] not in LANGUAGES:
        fail(f"{path}: language must be one of {', '.join(sorted(LANGUAGES))}")
    if entry["base"] != "bookworm":
        fail(f"{path}: base must be 'bookworm'")
    for package in entry["packages"]:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", package):
            fail(f"{path}: '{package}' is not a Debian package name")
    return entry


def load(directory):
    files = sorted(f for f in os.listdir(directory) if f.endswith(".yaml"))
    if not files:
        fail(f"no runtimes in {directory}")
    return {e["id"]: e for e in (parse(os.path.join(directory, f)) for f in files)}


def main(argv):
    if len(argv) < 2:
        fail(__doc__)
    runtimes = load(argv[0])
    if argv[1] == "ids":
        print("\n".join(sorted(runtimes)))
    elif argv[1] == "get" and len(argv) == 4:
        if argv[2] not in runtimes:
            fail(f"unknown runtime '{argv[2]}'; the catalogue has: {', '.join(sorted(runtimes))}")
        value = runtimes[argv[2]].get(argv[3], "")
        print(",".join(value) if isinstance(value, list) else value)
    else:
        fail(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
