# Call 4: 2-epoch confirmation (seeds 0 and 1) of two more candidates for vivid.
set -u
export PYTHONUNBUFFERED=1
W=/tmp/work; mkdir -p $W
python3 .gpu_full/unpack.py; rm -rf .gpu_cifar; ln -s /tmp/gpu_cifar .gpu_cifar
n=$(ls /tmp/gpu_cifar/cifar-10-batches-py | grep -c -E '^(data_batch_[1-5]|test_batch)$')
[ "$n" = 6 ] || { echo "data incomplete: stop"; exit 3; }
timeout 200 python3 tools/ablation.py --data_path .gpu_cifar --out $W/confirm2 --steps 3126 --seeds 0 1 \
    --parallel 4 --threads 3 --device cuda --only enhance enhance+filter > $W/confirm2.log 2>&1
echo "rc $?"
cp $W/confirm2/ablation.md $OUT/confirm2.md; cp $W/confirm2/ablation.json $OUT/confirm2.json
cd $W && tar czf $OUT/runs2.tgz confirm2.log $(find confirm2 -name metrics.json -o -name log.csv -o -name args.json) 2>/dev/null
tail -5 $W/confirm2.log
