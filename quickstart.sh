#!/usr/bin/env bash
# One entry point for a fresh Debian 12 machine (Python >= 3.11):
#   ./quickstart.sh serve [modelrepo serve flags]   install, then run the daemon on ./data (SQLite + disk)
#   ./quickstart.sh test  [pytest args]             install, then run the whole test suite
# Installs the system packages it needs (git, git-lfs, python3-venv; chromium for the tests) with
# apt-get when missing,
# then a virtualenv in .venv with the project and its test dependencies.
set -euo pipefail
cd "$(dirname "$0")"

mode="${1:-}"
case "$mode" in
  serve|test) shift ;;
  *) echo "usage: $0 serve|test [args...]" >&2; exit 2 ;;
esac

PYTHON="${PYTHON:-python3}"
missing=()
command -v git >/dev/null || missing+=(git)
command -v git-lfs >/dev/null || missing+=(git-lfs)
command -v curl >/dev/null || missing+=(curl)
command -v "$PYTHON" >/dev/null || missing+=(python3)
if command -v "$PYTHON" >/dev/null && ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
  missing+=(python3-venv)
fi
# The web UI tests drive Debian's Chromium through Playwright (its own browser download is not used).
if [ "$mode" = test ] && [ ! -x /usr/bin/chromium ]; then
  missing+=(chromium)
fi
# The scale-out tests run a throw-away PostgreSQL (initdb + pg_ctl) and nginx in front of two replicas.
if [ "$mode" = test ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if [ "$mode" = test ] && [ ! -x /usr/sbin/nginx ]; then
  missing+=(nginx-light)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "quickstart: installing ${missing[*]} with apt-get" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  # Packages only: the tests start their own PostgreSQL and nginx on free ports, so the packages'
  # system services are not started (policy-rc.d 101 = "action forbidden" for invoke-rc.d).
  no_start=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    no_start=1
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  if [ -n "$no_start" ]; then $sudo rm -f /usr/sbin/policy-rc.d; fi
fi

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"quickstart: Python >= 3.11 is required, found {sys.version.split()[0]}")
PY

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if [ "$mode" = serve ]; then extras=""; else extras="[test]"; fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".$extras"

if [ "$mode" = serve ]; then
  exec .venv/bin/modelrepo serve "$@"
fi
# One pytest worker per core (at most 4), each taking whole files, so a module's daemon serves all
# of its tests; most tests wait on git, daemons and servers, so two workers on two cores halve the
# run. MODELREPO_TEST_WORKERS=0 runs in this process (pdb, -s); any -n given here wins.
workers="${MODELREPO_TEST_WORKERS:-auto}"
exec .venv/bin/python -m pytest -n "$workers" --maxprocesses 4 --dist loadfile "$@"
