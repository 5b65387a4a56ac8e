# Sourced by a session's GPU call script (bash, from the repository root the call runs in) for what every call repeats:
#   STAGE_DIR (default .gpu-Z) holds a stage.tar.xz (scripts/gpu/stage.sh), unpacked in place and put on PATH and
#   LD_LIBRARY_PATH (env.sh); THIN_LIBS (default none): space-separated folders holding a lib.tar.xz
#   (scripts/gpu/stage-lib.sh), unpacked in place (their libdsv4.so is then DIR/lib/libdsv4.so).
# Sets R (the repository root), S (the stage), D (= $OUT), CARD (name and driver; also $D/card.txt), T0, LIM
# (${LIMIT:-575} seconds); functions el MSG (a line with the seconds since T0), left (seconds left of LIM) and pack
# (everything under $D but CSVs and archives into $D/all.tgz: a call returns only a few files). Writes the md5 of the
# stage's test binary and of every libdsv4.so to $D/md5.txt.
R=$(pwd)
S=$R/${STAGE_DIR:-.gpu-Z}
(cd "$S" && tar xJf stage.tar.xz)
for thin in ${THIN_LIBS:-}; do (cd "$R/$thin" && tar xJf lib.tar.xz); done
. "$S/env.sh"
export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT
CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)
echo "$CARD" | tee "$D/card.txt"
T0=$(date +%s)
LIM=${LIMIT:-575}
el() { echo "[$(($(date +%s) - T0)) s] $*"; }
left() { echo $((LIM - ($(date +%s) - T0))); }
pack() {
  (cd "$D" && tar czf "/tmp/all.tmp.$BASHPID" --exclude='*.csv' --exclude='*.tgz' . 2>/dev/null
    mv "/tmp/all.tmp.$BASHPID" all.tgz)
}
md5sum "$S/bin/dsv4_gpu_tests" "$S/lib/libdsv4.so" $(for thin in ${THIN_LIBS:-}; do echo "$R/$thin/lib/libdsv4.so"; done) |
  tee "$D/md5.txt"
# acc NAME PARTS SERVE_LEVELS NEED: scripts/gpu/suites/acceptance.sh's PARTS (into $D/acc_NAME) if NEED seconds are left.
acc() {
  local name=$1 parts=$2 levels=$3 need=$4 L
  L=$(left)
  [ "$L" -lt "$need" ] && { el "skip $name ($L s left)"; return; }
  STAGE=$S OUT=$D/acc_$name ACC_PARTS=$parts ACC_SERVE_LEVELS=$levels ACC_BUDGET=$((L - 15)) timeout $((L - 5)) \
    bash "$S/scripts/gpu/suites/acceptance.sh" >"$D/acc_$name.txt" 2>&1
  el "acceptance $name"
  pack
  sed -n '/^---- acceptance/,$p' "$D/acc_$name.txt"
}
# suite_and_h200_acceptance: the whole GPU suite ($D/suite.txt.gz, its verdict printed), then on an H200 the issues'
# acceptance parts by priority within the time left — how a call that lands CUDA code ends.
suite_and_h200_acceptance() {
  timeout 150 dsv4_gpu_tests >"$D/suite.txt" 2>&1
  el "suite rc=$?"
  grep -E "^\[  (PASSED|FAILED)|FAILED \]" "$D/suite.txt" | head
  gzip -9f "$D/suite.txt"
  pack
  if [[ $CARD == *H200* ]]; then
    acc quant quant,prefill,quality 64 95
    acc rms rms_norm 64 75
    acc contexts contexts 64 45
    acc serve64 serve 64 75
    acc longctx longctx 64 95
  fi
}
# prefill_ab: the 4,096-token Flash-slice prefill, quantised weights with fp8 activations and with bf16 ones (the
# control when only the fp8 path changed) in two alternating rounds, then bf16 weights; P is the command, the logs go
# to $D/prefill.txt.
P="dsv4 bench --synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --kv-cache-memory 16000000000 --reps 3 --warmup 1"
prefill_ab() {
  local round
  for round in 1 2; do
    timeout 40 $P --cuda-weights quantized --activation-quant fp8 >"$D/p.txt" 2>&1
    echo "q8 r$round: $(grep -E 'prefill +4096' "$D/p.txt")"; cat "$D/p.txt" >>"$D/prefill.txt"
    timeout 40 $P --cuda-weights quantized >"$D/p.txt" 2>&1
    echo "quant r$round: $(grep -E 'prefill +4096' "$D/p.txt")"; cat "$D/p.txt" >>"$D/prefill.txt"
  done
  timeout 40 $P --cuda-weights bf16 >"$D/p.txt" 2>&1
  echo "bf16: $(grep -E 'prefill +4096' "$D/p.txt")"; cat "$D/p.txt" >>"$D/prefill.txt"
}
