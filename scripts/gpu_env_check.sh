#!/usr/bin/env bash
# Runs `make bench-gpu SMOKE=1` in a fresh virtual environment that holds only what the offline
# GPU machine will have: the packages it comes with (listed in ../shared/device/wheels.sh's header)
# and the wheels that script carries, installed without their dependencies, and the project on
# PYTHONPATH, not installed. A missing dependency (an import that our own venv satisfies by
# chance) then fails here, in two minutes of CPU, and not in a GPU session's one 10-minute call.
# Not the same machine: Python 3.11 and torch 2.13 (CPU) here, Python 3.12 and torch 2.11 there.
#   bash scripts/gpu_env_check.sh [VENV_DIR]        (make gpu-env-check)
set -euo pipefail
root=$(git rev-parse --show-toplevel)
venv=${1:-/tmp/nas-kd-gpu-env}
torch=${TORCH:-torch==2.13.0}
wheels=$root/../shared/device/wheels.sh
quiet() { grep -v 'is ignored' || true; }
# The carried wheels: the `for p in ...` list of wheels.sh, so the two cannot drift apart.
carried=$(sed -n 's/^for p in \(.*\) "\$@"; do$/\1/p' "$wheels")
[ -n "$carried" ] || { echo "gpu-env-check: cannot read the wheel list of $wheels: update this script" >&2; exit 2; }
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q "$torch" 2>&1 | quiet
# What the GPU machine comes with (wheels.sh's header), with their own dependencies (torch's
# jinja2/MarkupSafe/setuptools, matplotlib's pillow, ...), as a pip install of them would bring.
"$venv/bin/pip" install -q numpy matplotlib onnx onnxruntime pytest tqdm rich pyyaml tabulate portalocker 2>&1 | quiet
# shellcheck disable=SC2086  # the list is word-split on purpose
"$venv/bin/pip" install -q --no-deps $carried fvcore==0.1.5.post20221221 2>&1 | quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$root"
PYTHONPATH=$root PYTHONUNBUFFERED=1 "$venv/bin/python" -m bench.gpu --smoke --work "$work" > "$work.log" 2>&1 || {
  tail -40 "$work.log"; echo "gpu-env-check: the smoke bench FAILED with only the GPU machine's packages (log: $work.log)" >&2; exit 1; }
tail -1 "$work.log"
echo "gpu-env-check: the smoke bench passed with only the GPU machine's packages ($("$venv/bin/python" -c 'import platform, torch; print("Python", platform.python_version(), "torch", torch.__version__)'))"
