# sourced first in every device call: the carried wheels onto the path
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:.
python3 -c "import matplotlib" 2>/dev/null || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whlx/*.whl
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
python3 -c "import torch, triton, sys; print('torch', torch.__version__, 'triton', triton.__version__, 'python', sys.version.split()[0])"
git rev-parse --short HEAD 2>/dev/null || true
