#!/usr/bin/env bash
# Build a real kube-apiserver / kube-controller-manager (/ kube-scheduler) from
# Debian's own `kubernetes` source package (1.20.x, all Go deps vendored), for
# the integration tests (tests/kube_harness.py).
#
# Idempotent: if the binaries are already in the cache dir and run, exit 0.
#   Cache dir: ${SYNERGAI_KUBE_CACHE:-$HOME/.cache/synergai-kube}/bin
# Cold build: ~10 min on 2 cores, ~1.4 GB peak RAM, ~2.5 GB temp disk.
# Does not modify /etc/apt: the deb-src entry lives in a private list/dir.
set -euo pipefail

log() { echo "[build-kube] $(date +%H:%M:%S) $*"; }
die() { echo "[build-kube] ERROR: $*" >&2; exit 1; }

HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
CACHE_DIR="${SYNERGAI_KUBE_CACHE:-$HOME/.cache/synergai-kube}"
BIN_DIR="$CACHE_DIR/bin"
REQUIRED_BINS=(kube-apiserver kube-controller-manager kubectl)
OPTIONAL_BINS=(kube-scheduler)

have_cached() {
    local b
    for b in "${REQUIRED_BINS[@]}"; do
        [[ -x "$BIN_DIR/$b" ]] || return 1
        if [[ $b == kubectl ]]; then "$BIN_DIR/$b" version --client >/dev/null 2>&1 || return 1; continue; fi
        "$BIN_DIR/$b" --version >/dev/null 2>&1 || return 1
    done
    return 0
}

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "must run as root (or have sudo) to apt-get install"
    SUDO="sudo"
fi

# ---------------------------------------------------------------- packages
PKGS=(golang-go etcd-server rsync jq dpkg-dev make)
missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    log "installing missing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! $SUDO apt-get install -y --no-install-recommends "${missing[@]}"; then
        log "apt-get install failed; running apt-get update and retrying"
        $SUDO apt-get update
        $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
    fi
else
    log "packages already installed: ${PKGS[*]}"
fi

if have_cached; then
    log "cached binaries OK in $BIN_DIR: $("$BIN_DIR/kube-apiserver" --version 2>&1)"
    exit 0
fi

# ---------------------------------------------------------------- work dir
WORK="$(mktemp -d "${TMPDIR:-/tmp}/synergai-kube-build.XXXXXX")"
cleanup() {
    local rc=$?
    if [[ -n "${WORK:-}" && -d "$WORK" ]]; then
        log "removing build tree $WORK"
        chmod -R u+w "$WORK" 2>/dev/null || true
        rm -rf "$WORK"
    fi
    if ((rc != 0)); then
        echo "[build-kube] FAILED (exit $rc)" >&2
    fi
    exit $rc
}
trap cleanup EXIT
log "work dir: $WORK"

# ---------------------------------------------------------------- deb-src
# Derive the deb-src line(s) from the system's configured Debian mirror.
. /etc/os-release
CODENAME="${VERSION_CODENAME:-}"
[[ -n "$CODENAME" ]] || CODENAME="$(awk -F'[ \t]+' '/^deb[ \t]/ {print $3; exit}' /etc/apt/sources.list 2>/dev/null || true)"
[[ -n "$CODENAME" ]] || die "cannot determine the Debian codename"

SRCLIST="$WORK/apt/sources.list"
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/archives/partial"
: > "$SRCLIST"

# deb822 *.sources: find stanzas of Types: deb whose Suites contain $CODENAME.
shopt -s nullglob
for f in /etc/apt/sources.list.d/*.sources; do
    awk -v codename="$CODENAME" '
        function flush() {
            if (types ~ /(^|[ \t])deb($|[ \t])/ && (" " suites " ") ~ ("[ \t]" codename "[ \t]") && enabled != "no") {
                n = split(uris, u, /[ \t]+/)
                for (i = 1; i <= n; i++) if (u[i] != "") {
                    opt = (signed != "" ? "[signed-by=" signed "] " : "")
                    print "deb-src " opt u[i] " " codename " " (comps != "" ? comps : "main")
                }
            }
            types = uris = suites = comps = signed = enabled = ""
        }
        /^[ \t]*#/ { next }
        /^[ \t]*$/ { flush(); next }
        {
            key = tolower($1); sub(/:$/, "", key)
            val = $0; sub(/^[^:]*:[ \t]*/, "", val)
            if (key == "types") types = val
            else if (key == "uris") uris = val
            else if (key == "suites") suites = val
            else if (key == "components") comps = val
            else if (key == "signed-by") signed = val
            else if (key == "enabled") enabled = tolower(val)
        }
        END { flush() }
    ' "$f" >> "$SRCLIST"
done
# one-line format sources.list(.d/*.list)
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r "$f" ]] || continue
    awk -v codename="$CODENAME" '
        /^[ \t]*deb[ \t]/ {
            line = $0; sub(/^[ \t]*deb[ \t]+/, "", line)
            opts = ""
            if (line ~ /^\[/) { opts = substr(line, 1, index(line, "]")); line = substr(line, index(line, "]") + 1); sub(/^[ \t]+/, "", line) }
            n = split(line, a, /[ \t]+/)
            if (a[2] == codename) {
                comps = ""; for (i = 3; i <= n; i++) comps = comps " " a[i]
                print "deb-src " (opts != "" ? opts " " : "") a[1] " " a[2] comps
            }
        }' "$f" >> "$SRCLIST"
done
shopt -u nullglob
sort -u -o "$SRCLIST" "$SRCLIST"
[[ -s "$SRCLIST" ]] || die "no Debian '$CODENAME' mirror found in /etc/apt sources"
log "private deb-src list:"; sed 's/^/    /' "$SRCLIST"

APT_OPTS=(
    -o "Dir::Etc::sourcelist=$SRCLIST"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$WORK/apt/lists"
    -o "Dir::Cache::archives=$WORK/apt/archives"
    -o "Dir::Cache::pkgcache="
    -o "Dir::Cache::srcpkgcache="
    -o "APT::Sandbox::User=root"
)

log "fetching source index"
$SUDO apt-get "${APT_OPTS[@]}" update
mkdir -p "$WORK/src"
log "apt-get source kubernetes"
(cd "$WORK/src" && apt-get "${APT_OPTS[@]}" source kubernetes)

TREE="$(find "$WORK/src" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)"
[[ -n "$TREE" && -f "$TREE/Makefile" ]] || die "unpacked kubernetes source tree not found under $WORK/src"
log "source tree: $TREE"

# Upstream version, e.g. 1.20.5+really1.20.2 -> 1.20.2
DEB_VERSION="$(cd "$TREE" && dpkg-parsechangelog -SVersion)"
UPSTREAM="${DEB_VERSION%-*}"; UPSTREAM="${UPSTREAM#*:}"; UPSTREAM="${UPSTREAM##*really}"; UPSTREAM="${UPSTREAM%%+*}"
UPSTREAM="${UPSTREAM%%~*}"
MAJOR="${UPSTREAM%%.*}"; rest="${UPSTREAM#*.}"; MINOR="${rest%%.*}"
log "Debian version $DEB_VERSION -> upstream v$UPSTREAM"

# ---------------------------------------------------------------- build
# GOPATH layout as in Debian's debian/rules.
export GOPATH="$WORK/.go"
mkdir -p "$GOPATH/src/k8s.io"
ln -sfn "$TREE" "$GOPATH/src/k8s.io/kubernetes"
export GOCACHE="$WORK/gocache"
export GOPROXY=off GOFLAGS=-mod=vendor CGO_ENABLED=0 GO111MODULE=off GOTOOLCHAIN=local
export KUBE_GIT_VERSION="v$UPSTREAM" KUBE_GIT_MAJOR="$MAJOR" KUBE_GIT_MINOR="$MINOR" KUBE_GIT_TREE_STATE=clean
export KUBE_GIT_COMMIT="debian-$DEB_VERSION"
export SOURCE_DATE_EPOCH="$(cd "$TREE" && dpkg-parsechangelog -STimestamp)"
export KUBE_BUILD_PLATFORMS=linux/amd64
case "$(dpkg --print-architecture)" in
    amd64) KUBE_BUILD_PLATFORMS=linux/amd64 ;;
    arm64) KUBE_BUILD_PLATFORMS=linux/arm64 ;;
    *) KUBE_BUILD_PLATFORMS="linux/$(go env GOARCH)" ;;
esac
export KUBE_BUILD_PLATFORMS
log "go: $(go version)"

WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubectl"
log "building: $WHAT (this takes ~10 min on 2 cores)"
start=$(date +%s)
(cd "$GOPATH/src/k8s.io/kubernetes" && make WHAT="$WHAT")
log "build finished in $(( $(date +%s) - start )) s"

OUT=""
for d in "$TREE/_output/bin" "$TREE/_output/local/bin/${KUBE_BUILD_PLATFORMS}" "$TREE/_output/local/go/bin"; do
    if [[ -x "$d/kube-apiserver" ]]; then OUT="$d"; break; fi
done
[[ -n "$OUT" ]] || die "built binaries not found under $TREE/_output"

mkdir -p "$BIN_DIR"
for b in "${REQUIRED_BINS[@]}" "${OPTIONAL_BINS[@]}"; do
    if [[ -x "$OUT/$b" ]]; then
        install -m 0755 "$OUT/$b" "$BIN_DIR/$b.tmp"
        mv -f "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"
        log "installed $BIN_DIR/$b"
    fi
done
have_cached || die "installed binaries do not run (--version failed)"
log "done: $("$BIN_DIR/kube-apiserver" --version 2>&1)"
