# call 1 on the two-GPU kind: GPU 0 the product baseline (one worker, one pack of 8); GPU 1 the fp32 kernel tests
# at the benchmark shapes (#5), then the 1000-step transfer study at width 2048 (#6 part 2), niced.
. devrun/prelude.sh
cp docs/transfer/gpu.jsonl $OUT/gpu.jsonl
(
  CUDA_VISIBLE_DEVICES=1 timeout 200 python3 -m pytest -q -s -p no:cacheprovider tests/gdn/test_triton.py -k fp32 > $OUT/fp32.log 2>&1
  echo "pytest rc $?" >> $OUT/fp32.log
  DELTAMU_GDN_BACKEND=chunk timeout --signal=INT $((560 - SECONDS)) nice -n 10 python3 benchmarks/transfer.py --scale gpu \
     --arms adamw-sp,adamw-mup-default --horizons 1000 --widths 128,256,512,1024,2048 --concurrent-widths \
     --workers 1 --gpus 1 --pack 7 --grid-points 4 --results $OUT/gpu.jsonl --md /tmp/gpu.md > $OUT/transfer.log 2>&1
) &
CUDA_VISIBLE_DEVICES=0 python3 benchmarks/product.py examples/gpu-proxy-job.json --out $OUT/base --timeout $((575 - SECONDS)) > $OUT/base.log 2>&1
echo "product rc $?"
wait
tail -3 $OUT/fp32.log; tail -5 $OUT/transfer.log; tail -4 $OUT/base.log; wc -l $OUT/gpu.jsonl
