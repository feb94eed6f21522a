#!/usr/bin/env bash
# Check the project on a CUDA machine in one command, in under 8 minutes on one GPU, with the
# machine's own Python and no network:
#
#   python tools/cifar_subset.py --data_path ../shared/data --out .gpu_data   # beforehand, where CIFAR-10 is
#   bash tools/gpu_check.sh OUT [PYTHON]                                     # on the GPU machine
#
# Stages, each under its own timeout, each run whatever the earlier ones gave: the environment
# (installing missing pure-Python packages from .whl/ if that folder exists), the GPU tests,
# bench.py at batch 32, 128 and 512 with the reference's step beside it, the step captured in a
# CUDA graph against the eager one (tools/graph_step.py: same numbers? how fast?), and a short
# real training run on .gpu_data (5,000 CIFAR-10 training images) resumed for a second epoch.
# OUT gets one log per stage, gpu_check.log (all of them in order) and summary.json (each
# stage's exit code, 124 for a timeout, and bench.py's and graph_step.py's figures).
# GPU_CHECK_STAGES="gpu_tests bench" (any of environment, gpu_tests, bench, graph, train) runs
# only those; GPU_CHECK_DATA points the training stage at another CIFAR-10 folder (the whole data
# set, where it is there), or with GPU_CHECK_DATA=synthetic, bench.py at random images (the
# training stage needs a real folder).
set -u
OUT=${1:?usage: bash tools/gpu_check.sh OUT [PYTHON]}
PY=${2:-python3}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
LOG="$OUT/gpu_check.log"
: > "$LOG"
STAGES=()
START=$SECONDS

WANTED=${GPU_CHECK_STAGES:-environment gpu_tests bench graph train}
DATA=${GPU_CHECK_DATA:-.gpu_data}

stage() {  # stage NAME SECONDS COMMAND...: run it under a timeout, log it, remember its exit code
    local name=$1 limit=$2
    shift 2
    local group=$name
    [ "$name" = resume ] && group=train
    case " $WANTED " in *" $group "*) ;; *) return 0 ;; esac
    echo "=== $name (at ${SECONDS}s, limit ${limit}s): $*" | tee -a "$LOG"
    timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 60 "$OUT/$name.log" >> "$LOG"
    echo "=== $name: exit $rc after $((SECONDS - START))s in all" | tee -a "$LOG"
    STAGES+=("\"$name\": $rc")
}

# Pure-Python packages the project imports beyond torch, torchvision, numpy, OpenCV, tensorboard
# and pytest; installed from .whl/ (no network) only where missing.
if [ -d .whl ]; then
    missing=$("$PY" - <<'PY'
import importlib.util
print(' '.join(p for m, p in (('safetensors', 'safetensors'), ('tqdm', 'tqdm'), ('matplotlib', 'matplotlib'),
                               ('PIL', 'pillow')) if importlib.util.find_spec(m) is None))
PY
)
    if [ -n "$missing" ]; then
        stage install 120 "$PY" -m pip install --no-index --find-links .whl --target .gpu_deps $missing
        export PYTHONPATH="$PWD/.gpu_deps${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi

stage environment 60 bash -c "nvidia-smi; \"$PY\" -c 'import torch, torchvision, cv2, numpy, tqdm, safetensors, matplotlib
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))'"
stage gpu_tests 200 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests
# The reference's step reads 2,048 PNG files in a DataLoader as it did; 2 windows of about 2 s each.
BENCH_DATA="--data_path $DATA"
[ "$DATA" = synthetic ] && BENCH_DATA=--synthetic
stage bench 200 "$PY" bench.py $BENCH_DATA --baseline --recipes spectral default --batch_sizes 32 128 512 \
    --windows 2 --seconds 2 --json "$OUT/bench.json"
stage graph 120 "$PY" tools/graph_step.py --recipes spectral batchnorm --batch_sizes 32 128 --json "$OUT/graph.json"
SPECTRAL="--smoothing 1.0 --l1_weight 0.985 --base_lr_gen 2e-4 --base_lr_disc 2e-4 --lr_decay_steps 4e4 --disc_norm spectral --apply_weight_init 0"
RUN="--data_path $DATA --save_path $OUT/run --samples_path $OUT/run/samples --tensorboard off --save_freq 1 --val_batches 8 $SPECTRAL"
stage train 75 "$PY" train.py $RUN --max_epoch 1
stage resume 75 "$PY" train.py $RUN --max_epoch 2 --resume latest

"$PY" - "$OUT" "${STAGES[@]}" <<'PY' || echo "{\"stages\": {$(IFS=,; echo "${STAGES[*]}")}}" > "$OUT/summary.json"
import json, os, sys
out = sys.argv[1]
stages = json.loads('{' + ','.join(sys.argv[2:]) + '}')
summary = {'stages': stages, 'all_passed': all(rc == 0 for rc in stages.values())}
bench = os.path.join(out, 'bench.json')
if os.path.isfile(bench):
    results = json.load(open(bench))
    summary['gpu'] = results.get('gpu')
    summary['bench'] = [{k: r.get(k) for k in ('recipe', 'batch_size', 'train_images_per_s', 'mfu',
                                               'reference_images_per_s', 'ratio', 'outside_products')}
                        for r in results.get('rows', [])]
graph = os.path.join(out, 'graph.json')
if os.path.isfile(graph):
    summary['graph'] = json.load(open(graph)).get('rows')
json.dump(summary, open(os.path.join(out, 'summary.json'), 'w'), indent=1)
print(json.dumps(summary, indent=1))
PY
echo "done in $((SECONDS - START)) s; $OUT/summary.json" | tee -a "$LOG"
