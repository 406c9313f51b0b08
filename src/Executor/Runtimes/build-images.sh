#!/usr/bin/env bash
# Builds the sandbox runtime images offline, one per entry of the runtime catalogue
# (runtimes/*.yaml at the repository root): debootstrap a minimal Debian bookworm root with the
# entry's packages, add the statically linked supervisor, write the SPDX bill of materials from the
# root's own dpkg database, and `docker import` a reproducible tar of it as sbx-<id>.
# Idempotent: an image is tagged with the hash of its recipe and only rebuilt when the recipe
# changes; `:current` always points at the newest. Superseded images are kept (see README).
#
# Usage: sudo ./build-images.sh [runtime-id...]     (default: every runtime in the catalogue)
# Env:   SBX_PARALLEL=0 to build one after the other (default: parallel).
#        SBX_RUNTIMES_DIR  the catalogue (default: <repo>/runtimes)
#        SBX_SBOM_DIR      where SBOMs are stored by digest (default: /var/lib/sandbox-audited/sboms)
#        SBX_VERIFY=1      rebuild from scratch into a throw-away tag and report whether the layer
#                          digest was reproduced (the existing images are not touched)
#        SBX_IMAGE_TAG=name to point `sbx-<id>:name` at the build instead of `:current`
#        (an engineer's or a test's own images; the service picks them with
#        Executor__Images__<id>=sbx-<id>:name).
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
CATALOGUE="${SBX_RUNTIMES_DIR:-$(cd "$HERE/../../.." && pwd)/runtimes}"
SBOM_DIR="${SBX_SBOM_DIR:-${SBX_STATE_DIR:-/var/lib/sandbox-audited}/sboms}"

catalogue() { python3 "$HERE/tools/catalogue.py" "$CATALOGUE" "$@"; }
# Extra packages on top of minbase and the supervisor's language, from the catalogue. Part of the recipe hash.
packages_for() { catalogue get "$1" packages; }
language_of() { catalogue get "$1" language; }

log() { printf '[build-images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $EUID -eq 0 ]] || die "must run as root (debootstrap)"
for tool in debootstrap docker gcc sha256sum tar python3; do
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

recipe_hash() {   # scripts + supervisor source and bootstraps + the runtime's language and package list
  { sha256sum "$SELF" "$SUP_SRC" "${BOOTS[@]}" "$HERE/tools/sbom.py" | awk '{print $1}'; echo "suite=$SUITE"
    echo "language=$(language_of "$1")"; echo "pkgs=$(packages_for "$1")"; } \
    | sha256sum | awk '{print $1}'
}
rootfs_hash() {   # what the debootstrap tree depends on (not the supervisor)
  { echo "suite=$SUITE variant=minbase"; echo "pkgs=$(packages_for "$1")"; echo "trim=v2"; } \
    | sha256sum | awk '{print $1}'
}

# A tar whose bytes depend only on the tree's names, contents, modes and mtimes: sorted names, numeric
# root ownership, GNU format (no pax atime/ctime headers), and every mtime after EPOCH clamped to it.
reproducible_tar() { # DIR EPOCH
  tar -C "$1" --sort=name --format=gnu --owner=0 --group=0 --numeric-owner \
      --mtime="@$2" --clamp-mtime -c .
}

# Files dpkg unpacked keep their packages' mtimes; what the install itself wrote (.pyc files, the dpkg
# database, generated configuration) carries the build's clock. EPOCH is the newest packaged mtime, so the
# same package versions give the same EPOCH, and clamping to it erases the build's clock.
source_epoch() { # DIR STARTED
  find "$1" -xdev -type f ! -newermt "@$2" -printf '%T@\n' | sort -n | tail -1 | cut -d. -f1
}

MIRROR=""
# Produces $CACHE/rootfs-<lang>-<hash>.tar (trimmed tree, no supervisor). Cached so that a
# supervisor change only re-imports (seconds) instead of re-running debootstrap (~50 s).
make_rootfs_tar() {
  local lang=$1 out=$2 pkgs dir started epoch
  pkgs=$(packages_for "$lang")
  [[ -s $out && -s $out.epoch ]] && { log "$lang: reusing cached root tree"; return 0; }
  [[ -n $MIRROR ]] || die "no $SUITE mirror found in apt sources"
  dir="$WORK/root-$lang"
  # Separate .deb caches per language: debootstrap is not safe to run concurrently on one.
  mkdir -p "$CACHE/debs-$lang"
  log "$lang: debootstrap (packages: ${pkgs:-none})"
  local inc=()
  [[ -n $pkgs ]] && inc=(--include="$pkgs")
  started=$(date +%s)
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
  # What differs between two installs of the same packages: caches keyed by inode and time, backup
  # copies of the dpkg and debconf databases, the host's name and resolver (Docker mounts its own),
  # and the day of install in /etc/shadow (every account there is locked anyway).
  rm -f "$dir"/var/cache/ldconfig/aux-cache "$dir"/var/lib/dpkg/*-old "$dir"/var/cache/debconf/*-old
  : >"$dir/etc/hostname"; : >"$dir/etc/resolv.conf"
  epoch=$(source_epoch "$dir" "$started")
  [[ -f $dir/etc/shadow ]] && sed -i -E "s/^([^:]*:[^:]*:)[0-9]*:/\1$((epoch / 86400)):/" "$dir/etc/shadow"
  reproducible_tar "$dir" "$epoch" >"$out.tmp"
  echo "$epoch" >"$out.epoch"
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

# Imports the runtime's tree (cached root + supervisor) as a reproducible tar, with its SBOM beside it.
import_image() { # RUNTIME HASH TAG
  local rt=$1 hash=$2 tag=$3 lang rtar dir epoch sbom digest layer
  lang=$(language_of "$rt")
  rtar="$CACHE/rootfs-$rt-$(rootfs_hash "$rt").tar"
  make_rootfs_tar "$rt" "$rtar"
  # Root trees of earlier package lists are dead weight (exactly this id: "python" must not match "python-data").
  find "$CACHE" -maxdepth 1 -regextype posix-extended -regex ".*/rootfs-$rt-[0-9a-f]{64}\.tar(\.epoch)?" \
       ! -path "$rtar" ! -path "$rtar.epoch" -delete
  epoch=$(cat "$rtar.epoch")
  dir="$WORK/img-$rt"; mkdir -p "$dir"
  tar -C "$dir" --numeric-owner -xf "$rtar"
  install -D -m 0755 -o 0 -g 0 "$WORK/sbx-supervisor" "$dir/usr/local/bin/sbx-supervisor"
  # The bill of materials, from the image's own dpkg database; stored under its SHA-256.
  sbom="$WORK/sbom-$rt.json"
  python3 "$HERE/tools/sbom.py" "$dir" "$rt" "$epoch" >"$sbom"
  digest=$(sha256sum "$sbom" | awk '{print $1}')
  install -D -m 0644 "$sbom" "$SBOM_DIR/$digest.spdx.json"
  reproducible_tar "$dir" "$epoch" >"$WORK/layer-$rt.tar"
  layer="sha256:$(sha256sum "$WORK/layer-$rt.tar" | awk '{print $1}')"
  log "$rt: importing $tag (layer $layer, sbom sha256:$digest)"
  docker import \
      -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
      -c "LABEL sandbox.audited.recipe=$hash" \
      -c "LABEL sandbox.audited.runtime=$rt" \
      -c "LABEL sandbox.audited.language=$lang" \
      -c "LABEL sandbox.audited.sbom=sha256:$digest" \
      -c "LABEL sandbox.audited.layer=$layer" \
      -c "CMD [\"/usr/local/bin/sbx-supervisor\", \"$lang\"]" \
      "$WORK/layer-$rt.tar" "$tag" >/dev/null
  rm -rf "$dir" "$WORK/layer-$rt.tar"
  # docker import keeps the tar as given, so the layer's diff id is the tar's SHA-256.
  [[ $(docker image inspect -f '{{index .RootFS.Layers 0}}' "$tag") == "$layer" ]] \
    || die "$rt: the engine recorded a different layer digest than the tar's"
}

build_one() {
  local rt=$1 hash tag12 tag cur id
  hash=$(recipe_hash "$rt"); tag12=${hash:0:12}
  tag="sbx-$rt:r$tag12"; cur="sbx-$rt:$IMAGE_TAG"
  if [[ ${SBX_VERIFY:-0} == 1 ]]; then
    verify_one "$rt" "$hash" "$tag"
    return
  fi
  if docker image inspect "$tag" >/dev/null 2>&1; then
    log "$rt: $tag up to date"
  else
    import_image "$rt" "$hash" "$tag"
    if ! lint_boot "$(language_of "$rt")" "$tag"; then
      docker rmi "$tag" >/dev/null 2>&1 || true
      die "$rt: the bootstrap does not compile with the image's interpreter"
    fi
  fi
  docker tag "$tag" "$cur"
  # Retention: superseded r* tags are kept. A run's record names the image id it ran; keeping the image
  # keeps that id inspectable. Removing old images is an operator's decision (see README).
  id=$(docker image inspect -f '{{.Id}}' "$tag")
  echo "$rt $tag $id $(docker image inspect -f '{{index .RootFS.Layers 0}} {{index .Config.Labels "sandbox.audited.sbom"}} {{.Size}}' "$tag")" >"$WORK/result-$rt"
}

# Rebuilds from a fresh debootstrap (own cache of root trees, shared .debs) into a throw-away tag and
# compares the layer digest with the current image's.
verify_one() { # RUNTIME HASH TAG
  local rt=$1 hash=$2 tag=$3 want got
  want=$(docker image inspect -f '{{index .RootFS.Layers 0}}' "$tag" 2>/dev/null) || die "$rt: build $tag first"
  CACHE_ROOTS="$WORK/verify-cache"
  mkdir -p "$CACHE_ROOTS"
  CACHE_SAVED=$CACHE; CACHE=$CACHE_ROOTS
  ln -sfn "$CACHE_SAVED/debs-$rt" "$CACHE/debs-$rt"
  import_image "$rt" "$hash" "sbx-$rt:verify"
  CACHE=$CACHE_SAVED
  got=$(docker image inspect -f '{{index .RootFS.Layers 0}}' "sbx-$rt:verify")
  docker rmi "sbx-$rt:verify" >/dev/null
  if [[ $got == "$want" ]]; then
    echo "$rt reproduced $got" >"$WORK/result-$rt"
  else
    echo "$rt differs: built $got, $tag has $want" >"$WORK/result-$rt"
  fi
}

langs=("$@")
[[ ${#langs[@]} -gt 0 ]] || mapfile -t langs < <(catalogue ids)
for l in "${langs[@]}"; do packages_for "$l" >/dev/null || exit 2; done
mkdir -p "$SBOM_DIR"

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
