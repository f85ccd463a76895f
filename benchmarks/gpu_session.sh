#!/usr/bin/env bash
# The one command of a session lent an offline GPU machine (run from the project root there):
#   bash benchmarks/gpu_session.sh [gpu_suite.py options, e.g. --budget-s 420]
# It installs the wheels of .whl/ (made here with `bash ../shared/offline-gpu/wheelhouse.sh torchao==0.18.0`, carried
# with the call) beside the machine's own python, prints the GPU, torch and cuDNN versions, and runs the GPU suite,
# writing the report row by row to $OUT (the device tool's folder) or benchmarks/.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed" >&2; exit 9; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuDNN', torch.backends.cudnn.version())"
exec python3 benchmarks/gpu_suite.py --output "${OUT:-benchmarks}/RESULTS-gpu.md" "$@"
