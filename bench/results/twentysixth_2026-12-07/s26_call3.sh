#!/bin/bash
# Session 26, call 3 (short budget): H200 only — issue 16's context figures first, then the whole GPU suite.
set -u
R=$(pwd); S=$R/.gpu-Y; (cd $S && tar xJf stage.tar.xz)
D=$OUT; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
[[ $CARD == *H200* ]] || { echo "not an H200: nothing to run"; exit 0; }
pack() { (cd $D && tar czf /tmp/a.tgz --exclude='*.csv' . ; mv /tmp/a.tgz all.tgz); }
( while sleep 20; do pack; done ) & P=$!
md5sum $S/bin/dsv4_gpu_tests $S/lib/libdsv4.so | tee $D/md5.txt
STAGE=$S OUT=$D/acc1 ACC_PARTS=contexts ACC_BUDGET=80 DSV4_SOURCE_DIR=$R bash $S/scripts/gpu/suites/acceptance.sh > $D/contexts.txt 2>&1; pack; tail -12 $D/contexts.txt
STAGE=$S OUT=$D/acc2 ACC_PARTS=tests ACC_BUDGET=${TESTS_BUDGET:-130} DSV4_SOURCE_DIR=$R bash $S/scripts/gpu/suites/acceptance.sh > $D/tests.txt 2>&1; kill $P; pack; tail -4 $D/tests.txt
