#!/usr/bin/env bash
# System packages FlowPilot needs. Installed with apt-get when running as root on Debian;
# otherwise this says what to install. `venv`: what creating the virtualenv needs;
# `test`: what the test suite needs as well.
set -euo pipefail
what="${1:-test}"
need=()

python=$(command -v python3.11 || command -v python3)
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need+=("python3-venv")
fi
if [ "$what" = "test" ] && ! command -v tesseract >/dev/null 2>&1; then
  need+=("tesseract-ocr")
fi

[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "missing system packages: ${need[*]}" >&2
  echo "install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
