#!/usr/bin/env bash
# Installs the Debian packages MNAS uses when they are missing: the embedded proxy data set
# (dataset-fashion-mnist, IDX files under /usr/share/datasets/fashion-mnist) and, with --browser, Chromium for the
# dashboard's browser test. Runs `apt-get update` once (when the package lists are older than this machine's boot)
# and needs root; without root it prints what to run and carries on, so the rest can still work.
set -u
want=()
[ -d /usr/share/datasets/fashion-mnist ] || want+=(dataset-fashion-mnist)
if [ "${1:-}" = "--browser" ]; then
    command -v chromium >/dev/null 2>&1 || want+=(chromium)
fi
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "mnas: missing Debian package(s): ${want[*]}." >&2
    echo "mnas: install them with:  sudo apt-get update && sudo apt-get install -y ${want[*]}" >&2
    exit 0
fi
echo "mnas: installing ${want[*]} with apt-get (once)..."
export DEBIAN_FRONTEND=noninteractive
stamp=/var/lib/apt/periodic/mnas-update-stamp
if [ ! -f "$stamp" ] || [ "$stamp" -ot /proc/1 ]; then
    apt-get update -qq && mkdir -p "$(dirname "$stamp")" && touch "$stamp"
fi
apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null || {
    echo "mnas: apt-get could not install ${want[*]}; the proxy task will say how to provide the data." >&2
    exit 0
}
