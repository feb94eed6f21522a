#!/bin/bash
# The picture runs: the two published recipes for 782 steps of 32 (half an epoch), seed 0, as the
# ablation's runs are made (tools/ablation.py train_command), one thread each, side by side.
cd /work/main
for r in spectral batchnorm; do
  OMP_NUM_THREADS=1 .venv/bin/python train.py --data_path ../shared/data --save_path /work/runs/pictures/$r \
    --samples_path /work/runs/pictures/$r/samples --recipe $r --seed 0 --max_steps 782 --save_freq 1 \
    --val_batches 10 > /work/runs/pictures/$r.log 2>&1 &
done
wait
OMP_NUM_THREADS=2 .venv/bin/python test.py --data_path ../shared/data \
  --checkpoints /work/runs/pictures/batchnorm/checkpoint_ep0.pt /work/runs/pictures/spectral/checkpoint_ep0.pt /work/runs/vivid_step782.pt \
  --labels "batch norm" spectral vivid --pick 8 --per_class --save_path /work/runs/pictures/test > /work/runs/pictures/test.log 2>&1
echo done >> /work/runs/pictures/test.log
