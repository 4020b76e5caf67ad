# call 2 on the two-GPU kind: the product with two Celery workers (one per GPU, two packs of 4)
. devrun/prelude.sh
python3 benchmarks/product.py examples/gpu-proxy-job.json --out $OUT/two --timeout $((580 - SECONDS)) > $OUT/two.log 2>&1
echo "product rc $?"
grep -i "worker\|pack\|cuda_visible" $OUT/two/up.log | head -20
tail -4 $OUT/two.log
