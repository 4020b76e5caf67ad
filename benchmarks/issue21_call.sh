#!/bin/bash
# Issue 21's next device call, one H100, about 9.5 minutes; carry .flasite (fla's wheels, README's recipe):
#     run(command="bash benchmarks/issue21_call.sh", carry=[".flasite"], timeout_s=590)
# With less device time left, ISSUE21_S=<seconds> (default 570) shrinks every stage's deadline in proportion.
# Everything lands under $OUT/a; a stage cut by its deadline still returns what it wrote.
# 1. float64 checks at the bf16 benchmark shapes (pytest sets at once, while every timed cell compiles) of
#    ours-lean-tuned (TILED_GRAD_COPIES=bf16, TILED_KTILE_CC=k-tiles, TILED_ROW_DOTS=k-tiles, and the state backward
#    at 4 warps, 3 stages with 64-wide state tiles at every shape: tile or length behind its failure at T = 16384)
#    and ours-ops-w4 (the state backward at 4 warps, 3 stages, its k dS on bf16 operands as fla takes it, the
#    shipped tiles: whether the TF32 product, its A operand widened in registers, is what breaks at 4 warps; its
#    input Aqk^T dO in bf16; and dq, dk's four products after the reduction on bf16 operands);
# 2. ours, fla and the candidates timed at every reference shape (wide first), CUDA ms per kernel;
# 3. the packing rows: K = 16 at d = 128 and K = 8 at d = 256, the update in the step's graph and outside it, and
#    the mixer's input projections as one GEMM (GatedDeltaNet.one_input_gemm);
# 4. the state backward's launch configs at 32-wide state tiles (benchmarks/kernel_configs.py).
cd "$(dirname "$0")/.."
mkdir -p "$OUT/a" /tmp/site && tar -C /tmp/site -xJf .flasite/site_all.tar.xz
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/a/card.txt"
export DELTAMU_GDN_TUNED="state_bwd_tiled=4x3,TILED_STATE_BLOCK_V=64"
# the switches gdn_kernels.py sets for a variant's cells (its OURS_VARIANTS), so the checks run the kernels it times
variant_env() {
    python3 -c "import sys; sys.path.insert(0, 'benchmarks'); import gdn_kernels as g
print(' '.join(f'{k}={v}' for k, v in g.OURS_VARIANTS[sys.argv[1]].items()))" "$1"
}
LEAN_TUNED=$(variant_env ours-lean-tuned) && OPS_W4=$(variant_env ours-ops-w4) && [ -n "$LEAN_TUNED$OPS_W4" ] \
    || { echo "gdn_kernels.py gave no variant's switches" >&2; exit 1; }
IMPLS=ours,fla,ours-lean-tuned,ours-ops-w4,ours-tuned,ours-lean,ours-copies,ours-ktile-cc,ours-row-dots
S=${ISSUE21_S:-570}; at() { echo $(( $1 * S / 570 )); }       # a stage's end, scaled to the call's seconds
T="python3 -m pytest --noconftest -p no:cacheprovider -v -n 5 -k 'benchmark_shapes and bf16' tests/gdn/test_triton.py"
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
( env $LEAN_TUNED PYTHONPATH=. timeout $(at 150) sh -c "$T" > "$OUT/a/lean_tuned.txt" 2>&1 ) &
( env $OPS_W4 PYTHONPATH=. timeout $(at 150) sh -c "$T" > "$OUT/a/ops_w4.txt" 2>&1 ) &
( PYTHONPATH=/tmp/site:. timeout $(at 150) python3 benchmarks/gdn_kernels.py --warm-only --impls ours,fla,ours-lean-tuned,ours-ops-w4,ours-tuned --shapes 2,3,4,1,0 --deadline $(at 140) --warm-jobs 5 --out /tmp/warm > "$OUT/a/warm.txt" 2>&1 ) &
wait
echo "checks took $(el) s"
for f in lean_tuned ops_w4; do
    echo "== $f: $(grep -cE ' PASSED' "$OUT/a/$f.txt") passed, $(grep -cE ' FAILED| ERROR' "$OUT/a/$f.txt") failed"
    grep -E "^FAILED" "$OUT/a/$f.txt" | head -5
done
KD=$(( $(at 340) - $(el) )); [ $KD -lt 120 ] && KD=120
PYTHONPATH=/tmp/site:. timeout $(( KD + 40 )) python3 benchmarks/gdn_kernels.py --impls $IMPLS --no-model --shape-major --profile-impls $IMPLS --shapes 2,3,4,1,0 --deadline $KD --cell-timeout 60 --warmup 25 --rep 100 --load-autotune benchmarks/autotune/fla-0.6.0-h100-triton3.6.tgz --out "$OUT/a/kernels" > "$OUT/a/kernels.log" 2>&1
echo "kernels done at $(el) s"
P="--no-plan --no-check --no-profile --single-repeats 1"
PB=$(( $(at 450) - $(el) )); [ $PB -lt 40 ] && PB=40
timeout $(( PB + 30 )) python3 benchmarks/packing.py --widths 128 --packs 16 --update-outside-graph 16 --one-input-gemm 16 $P --time-budget $(( PB * 2 / 3 )) --out "$OUT/a/pack128" > "$OUT/a/pack128.log" 2>&1
PB=$(( $(at 478) - $(el) )); [ $PB -lt 30 ] && PB=30
timeout $(( PB + 25 )) python3 benchmarks/packing.py --widths 256 --packs 8 --update-outside-graph 8 --one-input-gemm 8 $P --time-budget $PB --out "$OUT/a/pack256" > "$OUT/a/pack256.log" 2>&1
R=$(( S - $(el) ))
if [ $R -gt 60 ]; then
    DELTAMU_GDN_LAUNCH=TILED_STATE_BLOCK_V=32 PYTHONPATH=. timeout $R python3 benchmarks/kernel_configs.py --out "$OUT/a/sbwd32" --deadline $(( R - 5 )) --compile-s 30 --shapes "8,2048,16,128,128;2,16384,16,128,128" --candidates state_bwd_tiled:w4s1,state_bwd_tiled:w2s2,state_bwd_tiled:w4s2 > "$OUT/a/sbwd32.log" 2>&1
fi
echo "total $(el) s"
tail -32 "$OUT/a/kernels/kernels.md" 2>/dev/null || tail -20 "$OUT/a/kernels.log"
cat "$OUT/a/pack128/packing.md" "$OUT/a/pack256/packing.md" 2>/dev/null | grep -v Checks
head -30 "$OUT/a/sbwd32/configs.md" 2>/dev/null
