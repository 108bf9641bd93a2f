#!/usr/bin/env bash
# The Debian packages napari's tests need on a machine without a desktop: Xvfb (the virtual display
# pytest-xvfb starts), Mesa's software OpenGL, and the X/xcb, EGL, fontconfig and D-Bus libraries Qt's
# xcb platform loads. `make setup` runs this: as root with apt-get, the missing ones are installed;
# otherwise it says what to install and the napari tests skip (saying so). Nothing else is changed.
set -euo pipefail

packages=(xvfb libgl1 libegl1 libgl1-mesa-dri libglx-mesa0 libfontconfig1 libdbus-1-3 libxkbcommon0
          libxkbcommon-x11-0 libx11-xcb1 libxcb1 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
          libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libxcb-xinerama0 libxcb-xkb1)

command -v dpkg-query >/dev/null || { echo "display libraries: not a Debian-like system; install Xvfb and Qt's xcb libraries yourself for the napari tests"; exit 0; }
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "display libraries: the napari tests need: sudo apt-get install ${missing[*]}" >&2
  exit 0
fi
echo "display libraries: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/tmp/dspseg-apt.log 2>&1; then
  echo "display libraries: apt-get failed (see /tmp/dspseg-apt.log); the napari tests will skip without a display" >&2
fi
