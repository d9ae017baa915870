#!/usr/bin/env bash
# The main job: install what is missing, build, and run a short 2-rank job through
# hvdrun that says what it did.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build >/dev/null
echo "== hvdrun -np 2 build/hvd-demo"
exec build/hvdrun -np 2 build/hvd-demo "$@"
