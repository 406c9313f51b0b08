#!/usr/bin/env bash
# Builds the sandbox runtime images (sbx-python, sbx-javascript, sbx-shell) offline:
# debootstrap a minimal Debian bookworm root per language, add the statically linked
# supervisor, and `docker import` it. Idempotent: an image is tagged with the hash of its
# recipe and only rebuilt when the recipe changes; `:current` always points at the newest.
#
# Usage: sudo ./build-images.sh [python] [javascript] [shell]     (default: all three)
# Env:   SBX_PARALLEL=0 to build languages one after the other (default: parallel).
#        SBX_IMAGE_TAG=name to point `sbx-<lang>:name` at the build instead of `:current`
#        (an engineer's or a test's own images; the service picks them with
#        Executor__Images__<lang>=sbx-<lang>:name).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
SUP_DIR="$HERE/supervisor"
SUP_SRC="$SUP_DIR/sbx-supervisor.c"
BOOTS=("$SUP_DIR/boot.py" "$SUP_DIR/boot.js")   # embedded into the supervisor (.incbin)
IMAGE_TAG=${SBX_IMAGE_TAG:-current}
[[ $IMAGE_TAG =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ && $IMAGE_TAG != r* ]] \
  || { echo "[build-images] error: SBX_IMAGE_TAG must be a docker tag not starting with 'r'" >&2; exit 2; }
CACHE=/var/cache/sbx-debootstrap          # .debs and trimmed root trees survive between runs
SUITE=bookworm
ALL_LANGS=(python javascript shell)

# Extra packages on top of minbase, per language. Part of the recipe hash.
packages_for() {
  case "$1" in
    # python3-minimal alone lacks most of the standard library (no json, no subprocess
    # helpers...); libpython3.11-stdlib adds it without the rest of the python3 package.
    python)     echo "python3-minimal,libpython3.11-stdlib" ;;
    javascript) echo "nodejs" ;;
    shell)      echo "" ;;                 # dash is already in minbase
    *) echo "unknown language: $1" >&2; return 1 ;;
  esac
}

log() { printf '[build-images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $EUID -eq 0 ]] || die "must run as root (debootstrap)"
for tool in debootstrap docker gcc sha256sum tar; do
  command -v "$tool" >/dev/null || die "missing tool: $tool"
done
docker version >/dev/null 2>&1 || die "docker engine not reachable"

# The Debian mirror comes from this machine's apt configuration; never hard-code a host.
find_mirror() {
  local f uri
  # deb822 sources: first URIs: line of a stanza whose Suites include plain "bookworm".
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    uri=$(awk -v s="$SUITE" '
      BEGIN { RS=""; FS="\n" }
      {
        u=""; ok=0
        for (i=1;i<=NF;i++) {
          if ($i ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", $i); split($i, a, /[ \t]+/); u=a[1] }
          if ($i ~ /^Suites:/) { n=split($i, b, /[ \t]+/); for (j=2;j<=n;j++) if (b[j]==s) ok=1 }
        }
        if (ok && u != "") { print u; exit }
      }' "$f")
    [[ -n $uri ]] && { echo "$uri"; return 0; }
  done
  # one-line format: deb [opts] URI bookworm components
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] || continue
    uri=$(awk -v s="$SUITE" '$1=="deb" { i=2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                                         if ($(i+1)==s) { print $i; exit } }' "$f")
    [[ -n $uri ]] && { echo "$uri"; return 0; }
  done
  return 1
}

# ---- supervisor (built once, shared by all images) --------------------------------------
WORK=$(mktemp -d /tmp/sbx-build.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
log "compiling supervisor"
gcc -O2 -static -Wall -Wextra -Werror -Wa,-I,"$SUP_DIR" -o "$WORK/sbx-supervisor" "$SUP_SRC"
strip "$WORK/sbx-supervisor" 2>/dev/null || true

recipe_hash() {   # script + supervisor source + package list
  { sha256sum "$SELF" "$SUP_SRC" "${BOOTS[@]}" | awk '{print $1}'; echo "suite=$SUITE"; echo "pkgs=$(packages_for "$1")"; } \
    | sha256sum | awk '{print $1}'
}
rootfs_hash() {   # what the debootstrap tree depends on (not the supervisor)
  { echo "suite=$SUITE variant=minbase"; echo "pkgs=$(packages_for "$1")"; echo "trim=v1"; } \
    | sha256sum | awk '{print $1}'
}

MIRROR=""
# Produces $CACHE/rootfs-<lang>-<hash>.tar (trimmed tree, no supervisor). Cached so that a
# supervisor change only re-imports (seconds) instead of re-running debootstrap (~50 s).
make_rootfs_tar() {
  local lang=$1 out=$2 pkgs dir
  pkgs=$(packages_for "$lang")
  [[ -s $out ]] && { log "$lang: reusing cached root tree"; return 0; }
  [[ -n $MIRROR ]] || die "no $SUITE mirror found in apt sources"
  dir="$WORK/root-$lang"
  # Separate .deb caches per language: debootstrap is not safe to run concurrently on one.
  mkdir -p "$CACHE/debs-$lang"
  log "$lang: debootstrap (packages: ${pkgs:-none})"
  local inc=()
  [[ -n $pkgs ]] && inc=(--include="$pkgs")
  if ! debootstrap --variant=minbase "${inc[@]}" --cache-dir="$CACHE/debs-$lang" \
        "$SUITE" "$dir" "$MIRROR" >"$WORK/debootstrap-$lang.log" 2>&1; then
    tail -n 30 "$WORK/debootstrap-$lang.log" >&2
    die "$lang: debootstrap failed"
  fi
  # Trim: nothing in the sandbox needs apt state, docs, man pages or translations.
  rm -rf "$dir"/var/cache/apt/* "$dir"/var/lib/apt/lists/* "$dir"/usr/share/doc/* \
         "$dir"/usr/share/man/* "$dir"/usr/share/locale/* "$dir"/debootstrap \
         "$dir"/var/log/* "$dir"/tmp/* "$dir"/var/tmp/*
  # debootstrap records the mirror in the image; the image has no use for apt sources.
  : >"$dir/etc/apt/sources.list"
  rm -f "$dir"/etc/apt/sources.list.d/*
  tar -C "$dir" --numeric-owner -cf "$out.tmp" .
  mv "$out.tmp" "$out"
  rm -rf "$dir"
}

# The bootstrap must compile with the interpreter of the image that runs it (checked without
# running it: py_compile to a throw-away file, node --check).
lint_boot() {
  local lang=$1 tag=$2
  case "$lang" in
    python)     docker run --rm -i --network none --user 65534:65534 "$tag" python3 -c \
                  'import sys; compile(sys.stdin.buffer.read(), "boot.py", "exec")' <"$SUP_DIR/boot.py" ;;
    javascript) docker run --rm -i --network none --user 65534:65534 --tmpfs /tmp "$tag" sh -c \
                  'cat >/tmp/boot.js && node --check /tmp/boot.js' <"$SUP_DIR/boot.js" ;;
    *)          return 0 ;;
  esac
}

# Drops superseded recipes (r<hash> tags) of a language, but never an image that another tag
# (`:current`, an engineer's own tag) points at or that any container, running or not, uses:
# docker would only untag the former and refuses the latter without -f, which we never pass.
drop_superseded() {
  local lang=$1 keep=$2 old id used
  used=$(docker ps -a --format '{{.Image}}' | sort -u)
  for old in $(docker image ls --format '{{.Repository}}:{{.Tag}}' "sbx-$lang"); do
    [[ $old == "$keep" || $old != sbx-$lang:r* ]] && continue
    id=$(docker image inspect -f '{{.Id}}' "$old" 2>/dev/null) || continue
    if docker image ls --no-trunc --format '{{.Tag}} {{.ID}}' "sbx-$lang" | grep -v '^r' | grep -q " $id\$"; then
      continue
    fi
    if grep -qxF -e "$old" -e "$id" -e "${id#sha256:}" -e "${id:7:12}" <<<"$used"; then
      continue
    fi
    docker rmi "$old" >/dev/null 2>&1 || true
  done
}

build_one() {
  local lang=$1 hash tag12 tag cur id rtar dir
  hash=$(recipe_hash "$lang"); tag12=${hash:0:12}
  tag="sbx-$lang:r$tag12"; cur="sbx-$lang:$IMAGE_TAG"
  if docker image inspect "$tag" >/dev/null 2>&1; then
    log "$lang: $tag up to date"
  else
    rtar="$CACHE/rootfs-$lang-$(rootfs_hash "$lang").tar"
    make_rootfs_tar "$lang" "$rtar"
    # Root trees of earlier package lists are dead weight.
    find "$CACHE" -maxdepth 1 -name "rootfs-$lang-*.tar" ! -path "$rtar" -delete
    dir="$WORK/img-$lang"; mkdir -p "$dir"
    tar -C "$dir" --numeric-owner -xf "$rtar"
    install -D -m 0755 -o 0 -g 0 "$WORK/sbx-supervisor" "$dir/usr/local/bin/sbx-supervisor"
    log "$lang: importing $tag"
    tar -C "$dir" --numeric-owner -c . | docker import \
        -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
        -c "LABEL sandbox.audited.recipe=$hash" \
        -c "LABEL sandbox.audited.language=$lang" \
        -c "CMD [\"/usr/local/bin/sbx-supervisor\", \"$lang\"]" \
        - "$tag" >/dev/null
    rm -rf "$dir"
    if ! lint_boot "$lang" "$tag"; then
      docker rmi "$tag" >/dev/null 2>&1 || true
      die "$lang: the bootstrap does not compile with the image's interpreter"
    fi
  fi
  docker tag "$tag" "$cur"
  drop_superseded "$lang" "$tag"
  id=$(docker image inspect -f '{{.Id}}' "$tag")
  echo "$lang $tag $id" >"$WORK/result-$lang"
}

langs=("$@")
[[ ${#langs[@]} -gt 0 ]] || langs=("${ALL_LANGS[@]}")
for l in "${langs[@]}"; do packages_for "$l" >/dev/null || exit 2; done

# Only look up the mirror if some image actually needs debootstrap.
MIRROR=$(find_mirror || true)
mkdir -p "$CACHE"; chmod 0700 "$CACHE"

if [[ ${SBX_PARALLEL:-1} == 1 && ${#langs[@]} -gt 1 ]]; then
  pids=()
  for l in "${langs[@]}"; do build_one "$l" & pids+=($!); done
  rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  [[ $rc -eq 0 ]] || die "at least one image failed to build"
else
  for l in "${langs[@]}"; do build_one "$l"; done
fi

for l in "${langs[@]}"; do cat "$WORK/result-$l"; done
