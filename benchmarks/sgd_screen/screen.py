"""GPU screening: SGD variants at two widths, one pack per (arm, width)."""
import sys, json, os, time, itertools
sys.path.insert(0, os.path.dirname(__file__)); sys.path.insert(0, os.getcwd())
import concurrent.futures as cf, multiprocessing as mp

def run_pack(job):
    from variants import register; register()
    from gdn.config import GDNConfig
    from gdn.spec import DataSpec
    from gdn.spec import OptimizerSpec
    from gdn.spec import ScheduleSpec, SweepConfig, TrialSpec
    from gdn.packed import train_packed
    arm, width, lrs, seeds, sc = job
    cfg = SweepConfig(model=GDNConfig(width=sc['base'], depth=sc['depth']), parametrization=arm['param'],
                      readout=arm.get('readout'), output_mult=arm.get('om', 1.0), init_mult=arm.get('im', 1.0),
                      optimizer=OptimizerSpec(name='sgd', grad_clip=arm.get('clip', 1.0)),
                      schedule=ScheduleSpec(steps=sc['steps'], warmup_steps=sc['steps'] // 10, batch_size=sc['batch'], seq_len=sc['seq']),
                      data=DataSpec('builtin'), eval_batches=sc['eval'])
    specs = [TrialSpec(cfg, lr=lr, seed=s, width=width) for lr in lrs for s in seeds]
    t = time.time()
    res = train_packed(specs, log_every=max(1, sc['steps'] // 20))
    return [dict(arm=arm['name'], width=width, lr=sp.lr, seed=sp.seed, steps=sc['steps'], status=r.status, val=r.final_val_loss,
                 sec=time.time() - t, curve=[(p.step, round(p.loss, 4), round(p.grad_norm, 3)) for p in r.curve]) for sp, r in zip(specs, res)]

if __name__ == '__main__':
    spec = json.loads(open(sys.argv[1]).read()); out = sys.argv[2]
    sc = spec['scale']
    jobs = [(arm, w, [2 ** (k / 2) for k in arm.get('grid', spec['grid'])], arm.get('seeds', spec.get('seeds', [0])), sc)
            for w in sc['widths'][::-1] for arm in spec['arms']]
    with cf.ProcessPoolExecutor(spec.get('workers', 2), mp_context=mp.get_context('spawn')) as pool, open(out, 'a') as f:
        futs = [pool.submit(run_pack, j) for j in jobs]
        for fu in cf.as_completed(futs):
            try:
                recs = fu.result()
            except Exception as e:
                print('FAILED', type(e).__name__, str(e)[:300], flush=True); continue
            for r in recs:
                f.write(json.dumps(r) + '\n')
            f.flush()
            r0 = recs[0]
            print(f"{r0['arm']:<14} w={r0['width']:<5} " + " ".join(f"{r['val']:.3f}" for r in recs) + f"  ({r0['sec']:.0f}s)", flush=True)
