#!/usr/bin/env bash
# Install GPAW (LCAO data generation, `gears_h datagen gpaw`) into the project's .venv.
#
# GPAW 26.7.0 is published as an sdist only. Its C sources are compiled as C++17 but its
# build calls the C compiler, so a plain `pip/uv pip install gpaw` fails; with CC=g++ and
# Debian's libxc-dev and libopenblas-dev it builds in about 30 s. gpaw-data brings the PAW
# setups and LCAO basis sets (GPAW finds them through the gpaw_data package, no
# GPAW_SETUP_PATH needed). Idempotent: does nothing when the pinned versions import.
#
# Usage: scripts/install_gpaw.sh   (from anywhere; needs root or sudo for apt-get when the
# system libraries are missing)
set -euo pipefail
cd "$(dirname "$0")/.."

GPAW_VERSION=26.7.0
GPAW_DATA_VERSION=1.2.1
PY=.venv/bin/python

if [ ! -x "$PY" ]; then
    echo "install_gpaw.sh: no .venv here; run 'uv sync --frozen --extra dft' first" >&2
    exit 1
fi

if "$PY" - "$GPAW_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
import gpaw  # noqa: F401  (the compiled extension must load too)
import _gpaw  # noqa: F401
import gpaw_data  # noqa: F401
sys.exit(0 if version("gpaw") == sys.argv[1] else 1)
PY
then
    echo "gpaw $GPAW_VERSION already installed in .venv"
    exit 0
fi

missing=()
for pkg in libxc-dev libopenblas-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

UV=${UV:-uv}
CC=g++ "$UV" pip install --python "$PY" "gpaw==$GPAW_VERSION" "gpaw-data==$GPAW_DATA_VERSION"
"$PY" -c "import gpaw, _gpaw, gpaw_data; print('gpaw', gpaw.__version__, 'installed')"
