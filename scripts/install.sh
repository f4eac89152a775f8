#!/usr/bin/env bash
# Installs what Convertd needs on a fresh Debian/Ubuntu machine: system packages for the
# document, archive and type-sniffing engines (when we may use apt), then a virtualenv in
# .venv with the project and, with --test, its test extra. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# python3-uno: the warm LibreOffice pool's agent runs under /usr/bin/python3 with it;
# util-linux (unshare, setpriv) and libseccomp2 build each instance's jail
DEBIAN_PACKAGES=(
  libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui python3-uno
  libmagic1 libarchive13 fonts-dejavu-core openssl libheif-examples
  # the conversion sandbox and the LibreOffice pool: libseccomp (loaded with ctypes),
  # unshare/setpriv, sleep as pid 1
  libseccomp2 util-linux coreutils
  # the browser tests of the web page and GraphiQL (Playwright drives this chromium; nothing
  # is downloaded at run time); chromium-driver lets Selenium do the same
  chromium chromium-driver
  # fonts: metric-compatible stand-ins for Calibri, Cambria, Arial/Times/Courier New (same
  # layout as Word), Noto for every major script and emoji; fontconfig for `convertd doctor`
  fontconfig fonts-crosextra-carlito fonts-crosextra-caladea fonts-liberation2
  fonts-noto-core fonts-noto-cjk fonts-noto-color-emoji
  # LibreOffice's hyphenation dictionaries (those Debian 12 packages)
  hyphen-af hyphen-as hyphen-be hyphen-bg hyphen-bn hyphen-ca hyphen-cs hyphen-da hyphen-de
  hyphen-el hyphen-en-gb hyphen-en-us hyphen-es hyphen-fr hyphen-gl hyphen-gu hyphen-hi
  hyphen-hr hyphen-hu hyphen-id hyphen-is hyphen-it hyphen-kn hyphen-lt hyphen-lv hyphen-ml
  hyphen-mn hyphen-mr hyphen-nl hyphen-no hyphen-or hyphen-pa hyphen-pl hyphen-pt-br
  hyphen-pt-pt hyphen-ro hyphen-ru hyphen-sk hyphen-sl hyphen-sr hyphen-sv hyphen-ta
  hyphen-te hyphen-th hyphen-uk hyphen-zu
)

if command -v apt-get >/dev/null 2>&1; then
  missing=()
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
      echo "Installing Debian packages: ${missing[*]}"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      echo "warning: cannot install ${missing[*]} (not root); document formats may be unavailable" >&2
    fi
  fi
else
  echo "warning: no apt-get; install LibreOffice and libmagic yourself for document formats" >&2
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "${1:-}" = "--test" ]; then
  .venv/bin/python -m pip install -q -e ".[test]"
else
  .venv/bin/python -m pip install -q -e .
fi
# packages Convertd no longer uses, out of a .venv made before (scripts/licenses.py refuses
# them): PyAV, replaced by the ffprobe program (docs/decisions.md, 2026-12-03)
REMOVED_PACKAGES=(av)
.venv/bin/python -m pip uninstall -y -q "${REMOVED_PACKAGES[@]}" >/dev/null 2>&1 || true
