#!/usr/bin/env bash
# Starts one Triton server in SageMaker multi-model mode: the same server, flags and protocol the
# platform's local backend starts per endpoint instance from the worker, for running a Triton
# container on its own (the `triton` role of the image).
#
# Environment:
#   TRITON_SAGEMAKER_PORT    SageMaker protocol port (default 8080)
#   TRITON_METRICS_PORT      Prometheus metrics port (default 8002)
#   TRITON_MODEL_REPOSITORY  model repository directory (default $TENANTML_VAR_DIR/triton/empty-repo);
#                            models are loaded over the SageMaker API, so it normally stays empty
#   PYTHON                   interpreter whose nvidia-pytriton to use (default: python on PATH)
# Extra arguments are passed to tritonserver.
set -euo pipefail

python_bin="${PYTHON:-python}"

# find_spec locates the package without importing it, so this works even where pytriton's own
# Python dependencies would fail to import; only the bundled binary and libraries are needed.
if ! pytriton_dir="$("$python_bin" -c '
import importlib.util, sys
spec = importlib.util.find_spec("pytriton")
if spec is None or not spec.submodule_search_locations:
    sys.exit(1)
print(spec.submodule_search_locations[0])
')"; then
    echo "triton: nvidia-pytriton is not installed for $(command -v "$python_bin" || echo "$python_bin")." >&2
    echo "triton: install it (pip install nvidia-pytriton) or build the image with --build-arg INSTALL_TRITON=1." >&2
    exit 1
fi

tritonserver="$pytriton_dir/tritonserver/bin/tritonserver"
if [[ ! -x "$tritonserver" ]]; then
    echo "triton: nvidia-pytriton is installed but $tritonserver is missing or not executable." >&2
    exit 1
fi

site_packages="$(dirname "$pytriton_dir")"
python_libdir="$("$python_bin" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
python_bindir="$("$python_bin" -c 'import os, sys; print(os.path.dirname(sys.executable))')"

repo_dir="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
var_dir="${TENANTML_VAR_DIR:-$repo_dir/var}"
model_repository="${TRITON_MODEL_REPOSITORY:-$var_dir/triton/empty-repo}"
mkdir -p "$model_repository"

# The python backend and the stub built for this Python, prepared exactly as the platform's local
# backend prepares them (deployments/backends/local/process.py); the wheel ships the stubs apart from the
# backend, so Triton's default backend directory would have no usable python backend.
backend_dir="$(cd "$repo_dir" && "$python_bin" -c '
import sys
from pathlib import Path
from deployments.backends.local.process import prepare_triton_home
print(prepare_triton_home(Path(sys.argv[1])))
' "$var_dir")"

# The python library directory must come first: tritonserver's Python backend links against
# libpython, and the copy this interpreter was built with has to win over anything bundled.
# nvidia_pytriton.libs holds the shared libraries the wheel vendors for tritonserver.
export LD_LIBRARY_PATH="$python_libdir:$site_packages/nvidia_pytriton.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The stub's embedded interpreter ignores PYTHONPATH and takes its sys.prefix from the first
# python3 on PATH: this interpreter's directory must come first or model code runs on another
# environment's packages (a NumPy the stub cannot read corrupts every tensor).
export PATH="$python_bindir:$PATH"
export PYTHONPATH="$site_packages"
# Lets the SageMaker endpoint load and unload models by name at run time (multi-model endpoint).
export SAGEMAKER_MULTI_MODEL=true
# Model code must not reach the Hugging Face hub at run time.
export HF_HUB_OFFLINE=1

# --strict-readiness=false: otherwise one model that failed to load makes /ping fail for good.
exec "$tritonserver" \
    --allow-sagemaker=true \
    --sagemaker-port "${TRITON_SAGEMAKER_PORT:-8080}" \
    --allow-http=false \
    --allow-grpc=false \
    --model-control-mode=explicit \
    --model-repository="$model_repository" \
    --metrics-port "${TRITON_METRICS_PORT:-8002}" \
    --backend-directory="$backend_dir" \
    --strict-readiness=false \
    --disable-auto-complete-config \
    --exit-timeout-secs=10 \
    "$@"
