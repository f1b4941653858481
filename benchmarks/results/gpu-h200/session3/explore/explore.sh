#!/bin/bash
# Phase A: exploratory GPU measurements (no baselines). Output: one line per item + files in $OUT.
PY=$(command -v python || command -v python3)
export CONVZOO_DATA=data/fashion-mnist PYTHONPATH=src
B="$PY benchmarks/bench_train.py --seeds 1"
s() { local name=$1; shift; local t=$SECONDS; timeout ${LIMIT:-120} "$@" $EXTRA > $OUT/$name.txt 2>&1; echo "== $name rc=$? $((SECONDS - t)) s"; grep -E "seed 0|^convzoo |Error|error" $OUT/$name.txt | cut -c1-230 | tail -3; }
nvidia-smi --query-gpu=name --format=csv,noheader
s prof_lenet_amp $PY benchmarks/profile_step.py --model lenet --amp --cuda-graphs --rows 25 --steps 50
s prof_lenet_fp32 $PY benchmarks/profile_step.py --model lenet --no-amp --cuda-graphs --rows 25 --steps 50
for f in $OUT/prof_lenet_*.txt; do tail -n1 $f; done
s lenet_amp $B --model lenet --recipe d2l --amp --cuda-graphs --out $OUT/lenet_amp.json
s lenet_fp32 $B --model lenet --recipe d2l --no-amp --cuda-graphs --out $OUT/lenet_fp32.json
s lenet_fp32_nchw $B --model lenet --recipe d2l --no-amp --no-channels-last --cuda-graphs --out $OUT/x.json
s alexnet_e2 $B --model alexnet --recipe d2l --amp --cuda-graphs --epochs 2 --out $OUT/alexnet_e2.json
s googlenet_e3 $B --model googlenet --recipe d2l --amp --cuda-graphs --epochs 3 --out $OUT/googlenet_e3.json
s googlenet_e3_noat $B --model googlenet --recipe d2l --amp --cuda-graphs --no-autotune --epochs 3 --out $OUT/x.json
s resnet_b512_e6 $B --model resnet18 --recipe fast --amp --cuda-graphs --target 0.93 --batch-size 512 --lr 0.2 --epochs 6 --out $OUT/x.json
s resnet_b512_e8_r48 $B --model resnet18 --recipe fast --amp --cuda-graphs --target 0.93 --batch-size 512 --lr 0.2 --epochs 8 --resize 48 --out $OUT/x.json
LIMIT=150 s googlenet_e3_compile $B --model googlenet --recipe d2l --amp --cuda-graphs --compile --epochs 3 --out $OUT/googlenet_e3_compile.json
rm -f $OUT/x.json
