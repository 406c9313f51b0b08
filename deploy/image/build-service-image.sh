#!/usr/bin/env bash
# The service's own container image, built offline like the runtime images: a self-contained .NET publish on a
# debootstrap'd Debian base, then `docker import`. No container registry is needed. As root.
#   deploy/image/build-service-image.sh [TAG]      (default sandbox-audited:current)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TAG="${1:-sandbox-audited:current}"
SUITE=bookworm
CACHE=/var/cache/sbx-debootstrap
# What a self-contained .NET app needs from the system: ICU, OpenSSL (JWT and checkpoint signatures), CA roots (OIDC).
PACKAGES=libicu72,libssl3,ca-certificates,tzdata

log() { printf '[service-image] %s\n' "$*" >&2; }
die() { printf '[service-image] error: %s\n' "$*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || die "must run as root (debootstrap)"
for tool in debootstrap docker dotnet tar; do command -v "$tool" >/dev/null || die "$tool is missing"; done

# The Debian mirror as this machine's apt knows it; never a hard-coded host.
MIRROR="$(apt-cache policy | awk -v s="$SUITE/main" '$3 == s { print $2; exit }')"
[[ -n $MIRROR ]] || die "no $SUITE mirror in apt's sources (run apt-get update)"

WORK="$(mktemp -d /tmp/sbx-service-image.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
[[ -f "$ROOT/src/Api/wwwroot/index.html" ]] || node "$ROOT/web/build.mjs" >&2

log "publishing the service (self-contained, linux-x64)"
dotnet publish "$ROOT/src/Api/Api.csproj" -c Release -r linux-x64 --self-contained -o "$WORK/app" --nologo -v quiet >&2

log "debootstrap $SUITE (minbase + $PACKAGES)"
mkdir -p "$CACHE/debs-service"
debootstrap --variant=minbase --include="$PACKAGES" --cache-dir="$CACHE/debs-service" "$SUITE" "$WORK/root" "$MIRROR" \
  >"$WORK/debootstrap.log" 2>&1 || { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
rm -rf "$WORK"/root/var/cache/apt/* "$WORK"/root/var/lib/apt/lists/* "$WORK"/root/usr/share/doc/* \
       "$WORK"/root/usr/share/man/* "$WORK"/root/etc/apt/sources.list

install -d "$WORK/root/opt/sandbox-audited" "$WORK/root/var/lib/sandbox-audited"
cp -a "$WORK/app/." "$WORK/root/opt/sandbox-audited/"
cp -a "$ROOT/policies" "$ROOT/migrations" "$ROOT/runtimes" "$WORK/root/opt/sandbox-audited/"
# Its own unprivileged user; the Docker socket's group is added at `docker run --group-add`.
echo 'sandbox-audited:x:10001:10001::/var/lib/sandbox-audited:/usr/sbin/nologin' >> "$WORK/root/etc/passwd"
echo 'sandbox-audited:x:10001:' >> "$WORK/root/etc/group"
chown 10001:10001 "$WORK/root/var/lib/sandbox-audited" && chmod 700 "$WORK/root/var/lib/sandbox-audited"

log "importing $TAG"
tar -C "$WORK/root" --numeric-owner -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV Policies__Directory=/opt/sandbox-audited/policies' \
  -c 'ENV Migrations__Directory=/opt/sandbox-audited/migrations' \
  -c 'ENV Runtimes__Directory=/opt/sandbox-audited/runtimes' \
  -c 'USER 10001:10001' \
  -c 'WORKDIR /opt/sandbox-audited' \
  -c 'ENTRYPOINT ["/opt/sandbox-audited/Sandbox.Audited.Api", "--contentRoot", "/opt/sandbox-audited"]' \
  - "$TAG" >/dev/null
docker image inspect "$TAG" --format '{{.Id}} {{.Size}}' >&2
