#!/usr/bin/env bash
# Install what the test suite needs on a fresh Debian/Ubuntu machine (as root), then run it.
#   bash scripts/test.sh            # everything (GUI tests under a virtual X server)
#   bash scripts/test.sh -k io      # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

# napari draws with OpenGL even in tests: a virtual X server, Mesa and the libraries Qt's xcb
# platform plugin loads. QT_QPA_PLATFORM=offscreen is not enough once a layer is drawn.
APT_PACKAGES="xvfb xauth libgl1 libegl1 libgl1-mesa-dri libxkbcommon-x11-0 libxcb-icccm4
  libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0
  libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1"
missing=$(dpkg-query -W -f='${Package} ${Status}\n' $APT_PACKAGES 2>/dev/null | grep -vc "install ok installed" || true)
if ! command -v xvfb-run >/dev/null || [ "$missing" != "0" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $APT_PACKAGES >/dev/null
fi

# A regular (not editable) install: the tests then prove that the wheel carries the manifest.
python3 -m pip install -q --disable-pip-version-check ".[test]"

python3 -m ruff check src tests benchmarks
# The test extra installs PyQt6; an older PyQt5 left in the environment would win otherwise.
export QT_API="${QT_API:-pyqt6}"
xvfb-run -a -s "-screen 0 1280x1024x24" python3 -m pytest -q "$@"
