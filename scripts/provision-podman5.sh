#!/usr/bin/env bash
# Provision a private Podman 5 from Debian packages, for the tests.
#
#   scripts/provision-podman5.sh [--cache-dir DIR] [--refresh | --cached] [trixie] [sid]
#
# Flavours: trixie (Podman 5.4: artifacts through the CLI only) and sid (the
# newest 5.x: artifacts through REST too); both when none is named.
#
# The podman package and the libraries it needs are fetched with a private
# apt configuration (own sources list, lists, cache and status: the system's
# apt state and its apt.conf.d hooks are never used or touched), unpacked
# with `dpkg -x` into a prefix, and a copy of the binary is patched to load
# only the prefix's dynamic loader and libraries. The library set is computed:
# starting from design.md's list, every NEEDED soname that the prefix cannot
# resolve pulls in the lib-section dependencies of the packages already there,
# until nothing is missing. The conmon/crun/netavark helpers are the system's
# (the tests create containers but never start them); a smoke test (`podman
# info` on a throwaway store) proves the result works before it is used.
#
# Cache: DIR/<flavour>/<podman version>/ (default DIR: /var/cache/edgeprune/
# podman5, or $EDGEPRUNE_PODMAN5_CACHE). A completed build is reused with no
# network at all; --refresh asks the archive for a newer version first;
# --cached never downloads: it prints what is cached and exits 3 if a
# requested flavour is not.
#
# On a Debian 13 (trixie) host the trixie flavour IS the system Podman (5.4),
# which the tests already run as "system": it is not copied again.
#
# stdout: one `label=path` line per provisioned flavour (e.g.
# podman-5.4=/var/cache/edgeprune/podman5/trixie/5.4.2+ds1-2/podman), ready to
# join with ':' into EDGEPRUNE_PODMAN_BINARIES. Everything else goes to stderr.
# Exit status: 0 when every requested flavour is ready (or is the system's),
# 1 when any failed (said loudly on stderr), 2 on bad usage, 3 (--cached
# only) when one is not cached yet.
set -euo pipefail

CACHE="${EDGEPRUNE_PODMAN5_CACHE:-/var/cache/edgeprune/podman5}"
MIRROR="${EDGEPRUNE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# design.md section 5; names missing from a suite are simply not seeded.
SEED_LIBS=(libc6 libseccomp2 libsqlite3-0 libaudit1 libcap-ng0 libsemanage2 libselinux1
    libpcre2-8-0 libbsd0 libmd0 libsepol2 libbz2-1.0)
MAX_ROUNDS=8

REFRESH=0
CACHED=0
FLAVOURS=()

say() { echo "provision-podman5: $*" >&2; }
loud() {
    local bar="########################################################################"
    printf '%s\n%s\n%s\n' "$bar" "provision-podman5: FAILED: $*" "$bar" >&2
}
usage() {
    sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
    --cache-dir) [ $# -ge 2 ] || usage; CACHE="$2"; shift 2 ;;
    --cache-dir=*) CACHE="${1#*=}"; shift ;;
    --refresh) REFRESH=1; shift ;;
    --cached) CACHED=1; shift ;;
    -h | --help) usage ;;
    trixie | sid) FLAVOURS+=("$1"); shift ;;
    *) say "unknown argument: $1"; usage ;;
    esac
done
[ ${#FLAVOURS[@]} -gt 0 ] || FLAVOURS=(trixie sid)

# -- host prerequisites --------------------------------------------------------

need_patchelf() {
    command -v patchelf >/dev/null && return 0
    if [ "$(id -u)" -ne 0 ]; then
        loud "patchelf is missing and we are not root (apt-get install patchelf)"
        return 1
    fi
    say "installing patchelf with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q patchelf >/dev/null 2>&1 || {
        apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q patchelf >/dev/null
    } || { loud "apt-get install patchelf failed"; return 1; }
}

# shellcheck source=/dev/null
host_codename() { (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}"); }

system_podman_is() {  # $1 flavour: true when the host's own Podman 5 comes from that suite
    [ "$(host_codename)" = "$1" ] && command -v podman >/dev/null &&
        podman --version 2>/dev/null | grep -q ' 5\.'
}

# -- the private apt ------------------------------------------------------------

apt_setup() {  # $1 flavour dir, $2 suite
    local apt="$1/apt"
    mkdir -p "$apt/parts" "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/state"
    : >"$apt/state/status"
    echo "deb [signed-by=$KEYRING] $MIRROR $2 main" >"$apt/sources.list"
    # Read instead of (not on top of) the system's apt.conf and apt.conf.d:
    # their hooks (e.g. post-update refreshes) must not run for our lists.
    cat >"$apt/apt.conf" <<EOF
Dir::Etc::main "/dev/null";
Dir::Etc::parts "$apt/parts";
Dir::Etc::sourcelist "$apt/sources.list";
Dir::Etc::sourceparts "$apt/parts";
Dir::Etc::preferences "/dev/null";
Dir::Etc::preferencesparts "$apt/parts";
Dir::State "$apt/state";
Dir::State::lists "$apt/lists";
Dir::State::status "$apt/state/status";
Dir::Cache "$apt/cache";
Acquire::Languages "none";
Acquire::Check-Valid-Until "false";
APT::Sandbox::User "root";
EOF
    # Keep the host's proxy, if it has one.
    local proxy
    for proxy in http https; do
        local value
        value="$(apt-config dump "Acquire::$proxy::Proxy" 2>/dev/null |
            sed -n "s/^Acquire::$proxy::Proxy \"\(.*\)\";$/\1/p" | head -n1)"
        [ -z "$value" ] || echo "Acquire::$proxy::Proxy \"$value\";" >>"$apt/apt.conf"
    done
}

papt() { APT_CONFIG="$APT_CONF" "$@"; }

candidate() {  # $1 package: the version apt would fetch
    papt apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: //p' | grep -v '(none)'
}

download() {  # $1 dest dir, $2... packages
    local dest="$1"
    shift
    say "downloading $*"
    (cd "$dest" && papt apt-get download -qq "$@" >&2)
}

# Lib-section dependencies (first alternative that is a real libs package) of
# the given packages, one per line.
lib_deps() {
    local groups names
    groups="$(papt apt-cache show --no-all-versions "$@" 2>/dev/null | awk '
        /^(Pre-)?Depends:/ {
            sub(/^[^:]*: /, ""); n = split($0, g, /, /)
            for (i = 1; i <= n; i++) {
                gsub(/ *\([^)]*\)/, "", g[i]); gsub(/:any/, "", g[i]); gsub(/ *\| */, " ", g[i])
                print g[i]
            }
        }')"
    [ -n "$groups" ] || return 0
    # shellcheck disable=SC2086  # word splitting wanted: names
    names="$(papt apt-cache show --no-all-versions $groups 2>/dev/null | awk '
        /^Package:/ { p = $2 } /^Section:/ && $2 == "libs" { print p }' | sort -u)"
    local group alt
    while read -r group; do
        for alt in $group; do
            if grep -qx -- "$alt" <<<"$names"; then
                echo "$alt"
                break
            fi
        done
    done <<<"$groups" | sort -u
}

# -- the prefix -----------------------------------------------------------------

libdirs() {  # $1 prefix: its library dirs that exist, rpath order
    local d
    for d in "$1/usr/lib/x86_64-linux-gnu" "$1/lib/x86_64-linux-gnu"; do
        [ -d "$d" ] && echo "$d"
    done
}

# NEEDED sonames reachable from $2 that the prefix $1 cannot provide.
missing_sonames() {
    local prefix="$1" seen=" " queue=("$2") file soname dir found
    local dirs
    mapfile -t dirs < <(libdirs "$prefix")
    while [ ${#queue[@]} -gt 0 ]; do
        file="${queue[0]}"
        queue=("${queue[@]:1}")
        for soname in $(patchelf --print-needed "$file"); do
            case "$seen" in *" $soname "*) continue ;; esac
            seen+="$soname "
            found=""
            for dir in "${dirs[@]}"; do
                [ -e "$dir/$soname" ] && found="$dir/$soname" && break
            done
            if [ -n "$found" ]; then queue+=("$found"); else echo "$soname"; fi
        done
    done
}

build() {  # $1 build dir: prefix + patched podman
    local build="$1" debs="$1/debs" prefix="$1/prefix"
    mkdir -p "$debs" "$prefix"
    local seed=(podman) lib
    for lib in "${SEED_LIBS[@]}"; do
        [ -n "$(candidate "$lib")" ] && seed+=("$lib")
    done
    mapfile -t -O ${#seed[@]} seed < <(lib_deps podman)
    mapfile -t seed < <(printf '%s\n' "${seed[@]}" | sort -u)
    download "$debs" "${seed[@]}" || { loud "apt-get download ${seed[*]} failed"; return 1; }
    local have=("${seed[@]}") round missing new
    for ((round = 1; ; round++)); do
        local deb
        for deb in "$debs"/*.deb; do
            dpkg -x "$deb" "$prefix" || { loud "dpkg -x $deb failed"; return 1; }
        done
        rm -f "$debs"/*.deb
        [ -x "$prefix/usr/bin/podman" ] || { loud "the podman package has no usr/bin/podman"; return 1; }
        missing="$(missing_sonames "$prefix" "$prefix/usr/bin/podman" | tr '\n' ' ')"
        [ -n "${missing// /}" ] || break
        mapfile -t new < <(comm -23 <(lib_deps "${have[@]}") <(printf '%s\n' "${have[@]}" | sort -u))
        if [ ${#new[@]} -eq 0 ] || [ "$round" -ge "$MAX_ROUNDS" ]; then
            loud "no package provides: $missing(packages: ${have[*]})"
            return 1
        fi
        say "round $round: missing $missing-> fetching ${new[*]}"
        download "$debs" "${new[@]}" || { loud "apt-get download ${new[*]} failed"; return 1; }
        have+=("${new[@]}")
    done
    rmdir "$debs"
    local dirs loader
    mapfile -t dirs < <(libdirs "$prefix")
    loader="$(find "${dirs[@]}" -maxdepth 1 -name 'ld-linux-x86-64.so.2' | head -n1)"
    [ -n "$loader" ] || { loud "no ld-linux-x86-64.so.2 in the prefix"; return 1; }
    # A patched copy, not the loader as a launcher: Podman re-executes itself.
    cp "$prefix/usr/bin/podman" "$build/podman"
    patchelf --set-interpreter "$loader" --force-rpath \
        --set-rpath "$(IFS=:; echo "${dirs[*]}")" "$build/podman"
    printf '%s\n' "${have[@]}" >"$build/packages"
}

smoke_test() {  # $1 binary: `podman info` on a throwaway store, no network
    local tmp rc=0
    tmp="$(mktemp -d)"
    printf '[storage]\ndriver = "vfs"\n' >"$tmp/storage.conf"
    printf '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n' >"$tmp/containers.conf"
    CONTAINERS_CONF="$tmp/containers.conf" CONTAINERS_STORAGE_CONF="$tmp/storage.conf" \
        "$1" --root "$tmp/root" --runroot "$tmp/run" --storage-driver vfs --tmpdir "$tmp" \
        info --format '{{.Version.Version}}' >"$tmp/out" 2>&1 || rc=$?
    [ "$rc" -eq 0 ] || sed 's/^/    /' "$tmp/out" >&2
    rm -rf "$tmp"
    return "$rc"
}

emit() {  # $1 binary: prints podman-MAJOR.MINOR=PATH
    local label
    label="$("$1" --version 2>/dev/null | sed -n 's/^podman version \([0-9]*\.[0-9]*\).*/podman-\1/p')"
    [ -n "$label" ] || { loud "$1 --version does not say 'podman version X.Y'"; return 1; }
    echo "$label=$1"
}

# -- one flavour ----------------------------------------------------------------

provision() {  # $1 flavour; prints label=path on success
    local flavour="$1" dir="$CACHE/$1"
    if system_podman_is "$flavour"; then
        say "$flavour: the system Podman ($(podman --version)) is this flavour;" \
            "the tests run it as 'system', no copy made"
        return 0
    fi
    local current="$dir/current"
    if [ "$REFRESH" -eq 0 ] && [ -f "$current/.complete" ] && [ -x "$current/podman" ]; then
        emit "$(readlink -f "$current/podman")"
        return
    fi
    if [ "$CACHED" -eq 1 ]; then
        say "$flavour: not provisioned yet (run without --cached to download it)"
        return 3
    fi
    mkdir -p "$dir"
    exec 9>"$dir/.lock"
    flock 9  # one build per flavour at a time; a finished one is reused below
    apt_setup "$dir" "$flavour"
    APT_CONF="$dir/apt/apt.conf"
    say "$flavour: reading the package lists from $MIRROR"
    if ! papt apt-get update -q --error-on=any >"$dir/apt/update.log" 2>&1; then
        sed 's/^/    /' "$dir/apt/update.log" >&2
        loud "$flavour: apt-get update against $MIRROR $flavour failed (log above)"
        return 1
    fi
    local version key
    version="$(candidate podman)" || true
    [ -n "$version" ] || { loud "$flavour: no podman package in $MIRROR $flavour"; return 1; }
    key="${version//[:\/]/_}"
    local build="$dir/$key"
    if [ ! -f "$build/.complete" ]; then
        # Built in place (the patched binary names its loader by absolute
        # path); .complete is written last, so a half-built dir is redone.
        say "$flavour: building podman $version into $build"
        need_patchelf || return 1
        rm -rf "$build"
        if ! build "$build"; then
            rm -rf "$build"
            loud "$flavour: could not assemble podman $version (see above)"
            return 1
        fi
        if ! smoke_test "$build/podman"; then
            rm -rf "$build"
            loud "$flavour: podman $version does not run here (podman info failed, output above)"
            return 1
        fi
        echo "$version" >"$build/.complete"
    fi
    # Lists and apt's binary caches are only needed again by --refresh.
    rm -rf "$dir/apt/lists" "$dir/apt/cache"
    ln -sfn "$key" "$dir/current.tmp" && mv -T "$dir/current.tmp" "$current"
    emit "$build/podman"
}

[ "$REFRESH$CACHED" != 11 ] || { say "--refresh and --cached exclude each other"; usage; }
status=0
for flavour in "${FLAVOURS[@]}"; do
    # A subshell per flavour: one failing does not stop the other.
    rc=0
    (provision "$flavour") || rc=$?
    if [ "$rc" -eq 1 ] || { [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; }; then
        status=$rc
    fi
done
exit "$status"
