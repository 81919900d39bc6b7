#!/usr/bin/env bash
# Create or reuse .venv (Python 3.11) and install persp3d with every dependency pinned by
# constraints.txt. Used by `make test`, `make train` and therefore by .ci/run.
# A second run on the same checkout only re-installs when constraints.txt or pyproject.toml
# changed, and pip never re-downloads a package whose pinned version is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-}

# System libraries: `import open3d` needs libusb-1.0 (Debian: libusb-1.0-0); the headless
# viewer needs EGL/Mesa (libegl1, libgl1-mesa-dri); the web viewer's test opens its page in
# headless Chromium (Debian: chromium; WebGL through its bundled SwiftShader).
need_pkgs=()
ldconfig -p 2>/dev/null | grep -q "libusb-1.0.so.0" || need_pkgs+=(libusb-1.0-0)
ldconfig -p 2>/dev/null | grep -q "libEGL.so.1" || need_pkgs+=(libegl1)
ldconfig -p 2>/dev/null | grep -q "libGL.so.1" || need_pkgs+=(libgl1 libgl1-mesa-dri)
ldconfig -p 2>/dev/null | grep -q "libgomp.so.1" || need_pkgs+=(libgomp1)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need_pkgs+=(chromium)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages: ${need_pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "setup: missing system packages: ${need_pkgs[*]}" >&2
    echo "setup: install them with: sudo apt-get install ${need_pkgs[*]}" >&2
    echo "setup: (open3d, used by datasets and viewers, cannot be imported without libusb-1.0-0)" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  if [ -z "$PYTHON" ]; then
    for candidate in python3.11 python3; do
      if command -v "$candidate" >/dev/null && \
         "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        PYTHON=$candidate; break
      fi
    done
  fi
  if [ -z "$PYTHON" ]; then
    echo "setup: Python 3.11 is required (the pinned stack is built for it); set PYTHON=..." >&2
    exit 1
  fi
  echo "setup: creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.persp3d-installed"
want=$(cat constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setup: installing pinned dependencies into $VENV (first time: a few minutes, ~6 GB)"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/python" -m pip install -q -c constraints.txt pip setuptools wheel
"$VENV/bin/python" -m pip install -q -c constraints.txt --no-build-isolation -e ".[all]"
echo "$want" > "$stamp"
echo "setup: done"
