#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv, installs what the task needs, runs it.
#   ./dev.sh demo [ARGS]    stream the bundled recording through the bundled model
#   ./dev.sh test           the whole test suite, tier by tier: unit, integration, slow (installs
#                           torch 2.13.0, the numerics oracle); PYTEST_ADDOPTS reaches every tier
#   ./dev.sh test ARGS      one pytest run with ARGS (a file, -k EXPR, -m MARKS...)
#   ./dev.sh bench [ARGS]   the benchmark against PyTorch, ONNX Runtime and NumPy
set -euo pipefail
cd "$(dirname "$0")"
task="${1:-demo}"; shift || true
PY="${PYTHON:-python3}"

need_venv() {
  if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv with $($PY --version)"
    "$PY" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
  fi
}
install() {   # install the package with the given extras, once per set of extras
  local extras="$1" stamp=".venv/.installed-$1-$(cat pyproject.toml | cksum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ]; then
    echo "== installing edgelstm[$extras] into .venv"
    .venv/bin/python -m pip install -q -e ".[$extras]"
    touch "$stamp"
  fi
}

need_system_tools() {   # the MQTT tests run a private broker (TLS with openssl-made certificates); the C tests need a compiler
  local missing=""
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
  command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
  command -v cc >/dev/null 2>&1 || missing="$missing gcc"
  command -v c++ >/dev/null 2>&1 || missing="$missing g++"
  command -v make >/dev/null 2>&1 || missing="$missing make"
  [ -z "$missing" ] && return
  echo "== installing$missing (apt-get)"
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get install -y -q $missing >/dev/null 2>&1 || {
    $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q $missing >/dev/null; }
}

run_pytest() {   # exit 5 (no tests collected) fails too: a selection that matches nothing is a mistake
  local rc=0
  .venv/bin/python -m pytest "$@" || rc=$?
  if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; return 1; fi
  return "$rc"
}
# The tiers (markers in pyproject.toml), run in this order, as CI steps are: the first that fails
# stops the run, so a broken unit test is reported in seconds rather than after the slow ones.
TIERS=("unit:not integration and not slow" "integration:integration and not slow" "slow:slow")
run_tiers() {
  local tier name marks rc
  for tier in "${TIERS[@]}"; do
    name="${tier%%:*}"; marks="${tier#*:}"
    echo "== $name tests (-m \"$marks\")"
    rc=0
    run_pytest -q -m "$marks" || rc=$?
    if [ "$rc" -ne 0 ]; then echo "== $name tests failed (exit $rc): the later tiers were not run" >&2; return "$rc"; fi
  done
}

case "$task" in
  demo)
    need_venv; install "safetensors"
    exec .venv/bin/edgelstm demo "$@" ;;
  test)
    need_system_tools; need_venv; install "dev,torch"
    if [ "$#" -eq 0 ]; then run_tiers; else run_pytest "$@"; fi ;;
  bench)
    need_venv; install "dev,bench"
    exec .venv/bin/python benchmarks/bench_step.py "$@" ;;
  *)
    echo "usage: ./dev.sh demo|test|bench [ARGS]" >&2; exit 2 ;;
esac
