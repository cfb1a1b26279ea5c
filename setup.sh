#!/usr/bin/env bash
# Set up SmolQL on a fresh Debian/Ubuntu machine: system libraries, then a virtualenv in .venv.
#   ./setup.sh          install SmolQL (then: .venv/bin/smolql demo)
#   ./setup.sh --test   install it editable with the test tools (then: .venv/bin/pytest)
set -euo pipefail
cd "$(dirname "$0")"

# The C extension smolql._jpeg builds against libjpeg-turbo's headers; PyTurboJPEG (used for
# encoding) loads libturbojpeg; setpriv (util-linux) lets the tests drop root's file access;
# unshare (util-linux) and ip (iproute2) give the Ray tests a private network namespace.
need=()
[ -f /usr/include/jpeglib.h ] || need+=(libjpeg62-turbo-dev)
ldconfig -p | grep -q 'libturbojpeg\.so\.0' || need+=(libturbojpeg0)
command -v gcc >/dev/null || need+=(gcc)
command -v setpriv >/dev/null || need+=(util-linux)
command -v ip >/dev/null || need+=(iproute2)  # the Ray tests' private network namespace
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${need[@]}"
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "${1:-}" = "--test" ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q .
fi
