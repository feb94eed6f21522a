# Call 3: the last batches; the scoring classifier; the training and resume stage on the whole
# CIFAR-10; the ablation's screening and, time permitting, its confirmation. Leaves <= 8 files in $OUT.
set -u
export PYTHONUNBUFFERED=1
CAP=${CAP:-420}  # seconds this call may take in all (the session's device time is short)
STEPS1=${STEPS1:-1563}; STEPS2=${STEPS2:-3126}; DEVICE=${DEVICE:-cuda}; CLASSIFIER_FLAGS=${CLASSIFIER_FLAGS:-}
T0=$SECONDS
W=${W:-/tmp/work}; mkdir -p $W
python3 .gpu_full/unpack.py; rm -rf .gpu_cifar; ln -s /tmp/gpu_cifar .gpu_cifar
n=$(ls /tmp/gpu_cifar/cifar-10-batches-py | grep -c -E '^(data_batch_[1-5]|test_batch)$')
echo "batches present: $n of 6"
[ "$n" = 6 ] || { echo "data incomplete: stop"; exit 3; }
# 1. the scoring classifier, on the colour training images only
# (the README's command; beside it, 16 epochs, kept only if the default misses 90%)
(timeout 150 python3 tools/train_classifier.py $CLASSIFIER_FLAGS --epochs 16 --data_path .gpu_cifar \
    --out $W/classifier16.safetensors 2>&1 | tr '\r' '\n' | grep -v '%|' > $W/classifier16.log) &
timeout 150 python3 tools/train_classifier.py $CLASSIFIER_FLAGS --data_path .gpu_cifar --out $W/cifar10_classifier.safetensors 2>&1 \
    | tr '\r' '\n' | grep -v '%|' | tee $W/classifier.log
wait
cat $W/classifier16.log >> $W/classifier.log
CHOSEN=$W/cifar10_classifier.safetensors
python3 -c "import json,struct,sys; f=open(sys.argv[1],'rb'); n=struct.unpack('<Q',f.read(8))[0]; sys.exit(float(json.loads(f.read(n))['__metadata__']['test_top1']) < 0.9)" $CHOSEN || CHOSEN=$W/classifier16.safetensors
if [ -f $CHOSEN ]; then cp $CHOSEN weights/cifar10_classifier.safetensors; cp $W/cifar10_classifier.safetensors $W/classifier16.safetensors $OUT/ 2>/dev/null; fi
echo "classifier: $CHOSEN"
echo "classifier done at $((SECONDS - T0)) s"
# 2. the training stage of tools/gpu_check.sh on the whole data set (1 epoch, then resumed for a
# 2nd), beside the screening: the GPU has room for both
(GPU_CHECK_STAGES=train GPU_CHECK_DATA=.gpu_cifar bash tools/gpu_check.sh $W/check3 python3 > /dev/null 2>&1;
 cp $W/check3/gpu_check.log $OUT/check3_train.log; echo "train stage done at $((SECONDS - T0)) s") &
# 3. the ablation's screening: every run at once, 1 epoch (1,563 steps of 32), seed 0
timeout $((CAP - 60 - (SECONDS - T0))) python3 tools/ablation.py --data_path .gpu_cifar --out $W/screen --steps $STEPS1 --seeds 0 \
    --parallel ${PARALLEL:-11} --threads 1 --device $DEVICE > $W/screen.log 2>&1
echo "screening done at $((SECONDS - T0)) s (rc $?)"
cp $W/screen/ablation.md $OUT/screen.md 2>/dev/null; cp $W/screen/ablation.json $OUT/screen.json 2>/dev/null
# 4. confirmation, 2 epochs on seeds 0 and 1: the two published recipes and the best screened candidate
wait
LEFT=$((CAP - 30 - (SECONDS - T0)))
if [ -f $W/screen/ablation.json ] && [ $LEFT -gt 150 ]; then
    BEST=$(python3 .gpu_full/best.py $W/screen/ablation.json)
    [ -n "$BEST" ] || BEST=spectral
    echo "confirming spectral batchnorm $BEST with ${LEFT}s left"
    timeout $LEFT python3 tools/ablation.py --data_path .gpu_cifar --out $W/confirm --steps $STEPS2 --seeds 0 1 \
        --parallel 6 --threads 2 --device $DEVICE --only spectral batchnorm "$BEST" > $W/confirm.log 2>&1
    echo "confirmation done at $((SECONDS - T0)) s (rc $?)"
    cp $W/confirm/ablation.md $OUT/confirm.md 2>/dev/null; cp $W/confirm/ablation.json $OUT/confirm.json 2>/dev/null
fi
cd $W && tar czf $OUT/runs.tgz classifier.log screen.log confirm.log $(find screen confirm -name metrics.json -o -name log.csv -o -name args.json 2>/dev/null) 2>/dev/null
echo "all done at $((SECONDS - T0)) s"; ls -la $OUT
