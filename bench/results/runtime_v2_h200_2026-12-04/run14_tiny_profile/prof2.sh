#!/usr/bin/env bash
# ncu kernel sums of one eager tiny decode step (b=1), this build vs the pre-change CLI, same card.
set -u
cd .gpu-stage && tar xJf stage.tar.xz && cd ..
export DSV4_SOURCE_DIR=$PWD
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
for v in new old; do
  if [ $v = new ]; then B=.gpu-stage/bin L=.gpu-stage/lib; else B=.gpu-stage/old/bin L=.gpu-stage/old/lib; fi
  ARGS="-m models/dsv4-tiny-kjv --device cuda --prefill 128 --batch 1 --spec-tokens 0 --context 64 --modes none --reps 1 --warmup 0 --decode-steps 6"
  [ $v = new ] && ARGS="$ARGS --kv-cache-memory 2000000000"
  LD_LIBRARY_PATH=$L:/usr/local/cuda/lib64 DSV4_PROFILE_DECODE=2 timeout 100 $NCU --profile-from-start off --clock-control none \
    --metrics gpu__time_duration.sum --csv --page raw $B/dsv4 bench $ARGS > $OUT/${v}_ncu.csv 2>/tmp/${v}.log
  echo "$v ncu rc=$?"; tail -2 /tmp/${v}.log
  python3 tools/profile/ncu_summary.py $OUT/${v}_ncu.csv --top 30 > $OUT/${v}_summary.txt; cat $OUT/${v}_summary.txt
done
