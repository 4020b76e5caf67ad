"""SGD screening (issue 14): the variants of the table tried at 128 and 1024, registered as extra presets.
v-*: one role's SGD LR exponent changed; n-*: SGD LR exponents by parameter name; k-*: combinations;
"<name>-raw": the same without the width-consistent clip (what every arm was before it). Not part of the product.

    python benchmarks/sgd_screen/screen.py benchmarks/sgd_screen/s2-with-clip.json $OUT/s2.jsonl   # GPU, packs
    python benchmarks/sgd_screen/variants.py '{"widths": [256, 32], "seeds": [0, 1], "arms": [{"param": "mup",
        "om": 4, "im": 2, "grid": [-10, -8, -6]}]}' cpu.jsonl                                       # CPU, base 32
"""
import sys, json, math, itertools, time, os
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
import dataclasses
import multiprocessing as mp
import torch
import gdn.parametrization as P
from gdn.parametrization import Role, _rule, MUP_RULES, PRESETS, READOUTS

def register():
    def variant(name, **exps):
        rules = dict(MUP_RULES)
        for role, e in exps.items():
            r = rules[Role(role)]
            rules[Role(role)] = dataclasses.replace(r, lr_exp={**r.lr_exp, 'sgd': e})
        PRESETS[name] = dict(PRESETS['mup'], rules=rules)
    variant('v-emb0', embedding=0)
    variant('v-conv0', conv=0)
    variant('v-norm0', norm=0)
    variant('v-vec0', embedding=0, conv=0, norm=0)
    variant('v-scal0', gate_scalar=0)
    variant('v-hid-1', hidden=-1)
    variant('v-gate-1', gate_proj=-1)
    variant('v-embh', embedding=0.5)
    from gdn.parametrization import SP_RULES, NORMAL_HIDDEN, Init
    def sp_variant(name, readout='tied', init=False, **exps):
        rules = dict(SP_RULES)
        for role, e in exps.items():
            r = rules[Role(role)]
            rules[Role(role)] = dataclasses.replace(r, lr_exp={**r.lr_exp, 'sgd': e})
        if init:
            for role in (Role.HIDDEN, Role.GATE_PROJ):
                rules[role] = dataclasses.replace(rules[role], init=NORMAL_HIDDEN)
        PRESETS[name] = dict(rules=rules, readouts=READOUTS, default_readout=readout, o_mult=False, description='')
    sp_variant('s-logit', readout='tied-scaled')
    sp_variant('s-init', init=True)
    sp_variant('s-emb', embedding=1)
    sp_variant('s-vec', embedding=1, conv=1, norm=1)
    sp_variant('s-gates', gate_proj=-0.5, gate_scalar=0.5)
    sp_variant('s-untied0', readout='untied-zero')
    # constant per-role LR factors on top of mup: 'c-<role>x<factor>'
    CONST = {}
    for role in ('hidden', 'embedding', 'gate_proj', 'gate_scalar', 'conv', 'norm'):
        for f in (4, 0.25):
            name = f'c-{role}x{f:g}'
            PRESETS[name] = dict(PRESETS['mup'])
            CONST[name] = {Role(role): f}
    orig = P.Parametrization.lr_multiplier
    def lr_multiplier(self, role, optimizer, width_mult):
        return orig(self, role, optimizer, width_mult) * CONST.get(self.name, {}).get(role, 1.0)
    P.Parametrization.lr_multiplier = lr_multiplier
    # per-name SGD exponent offsets: preset 'n-<tag>' -> {glob: extra exponent}
    import fnmatch
    NAMED = {'n-o-1': {'*.o_proj.weight': -1}, 'n-o-.5': {'*.o_proj.weight': -0.5}, 'n-g-1': {'*.g_proj.weight': -1},
             'n-og-1': {'*.o_proj.weight': -1, '*.g_proj.weight': -1},
             'n-qkvg-1': {'*.q_proj.weight': -1, '*.k_proj.weight': -1, '*.v_proj.weight': -1, '*.g_proj.weight': -1},
             'n-attn-1': {'*.q_proj.weight': -1, '*.k_proj.weight': -1, '*.v_proj.weight': -1, '*.g_proj.weight': -1, '*.o_proj.weight': -1},
             'n-v-1': {'*.v_proj.weight': -1},
             'n-qkv-.5': {'*.q_proj.weight': -0.5, '*.k_proj.weight': -0.5, '*.v_proj.weight': -0.5},
             'n-qkvc-.5': {'*.q_proj.weight': -0.5, '*.k_proj.weight': -0.5, '*.v_proj.weight': -0.5, '*conv1d.weight': -0.5},
             'n-g-.5': {'*.g_proj.weight': -0.5},
             'n-mlp+.5': {'*.mlp.*_proj.weight': 0.5}, 'n-mlp+1': {'*.mlp.*_proj.weight': 1.0}}
    for name in NAMED:
        PRESETS[name] = dict(PRESETS['mup'])
    orig_pg = P.Parametrization.param_groups
    def param_groups(self, model, optimizer, width_mult, lr, weight_decay):
        groups = orig_pg(self, model, optimizer, width_mult, lr, weight_decay)
        extra = NAMED.get(self.name)
        if not extra or optimizer != 'sgd':
            return groups
        names = {id(p): n for n, p in model.named_parameters()}
        out = []
        for g in groups:
            by = {}
            for p in g['params']:
                e = next((v for pat, v in extra.items() if fnmatch.fnmatchcase(names[id(p)], pat)), 0)
                by.setdefault(e, []).append(p)
            for e, ps in by.items():
                f = width_mult ** e
                out.append({**g, 'params': ps, 'lr_mult': g['lr_mult'] * f, 'lr': g['lr'] * f})
        return out
    P.Parametrization.param_groups = param_groups
    # combined variants: 'k-<parts>' with parts joined by '+': emb0, g-1, vec0
    def combo(name, exps=None, named=None):
        rules = dict(MUP_RULES)
        for role, e in (exps or {}).items():
            r = rules[Role(role)]
            rules[Role(role)] = dataclasses.replace(r, lr_exp={**r.lr_exp, 'sgd': e})
        PRESETS[name] = dict(PRESETS['mup'], rules=rules)
        if named: NAMED[name] = named
    combo('k-emb0+g-1', {'embedding': 0}, {'*.g_proj.weight': -1})
    combo('k-vec0+g-1', {'embedding': 0, 'conv': 0, 'norm': 0}, {'*.g_proj.weight': -1})
    from gdn.parametrization import Init
    for tag, e in (('1/6', -1 / 6), ('1/4', -0.25)):        # matrices' init std ~ m^e instead of m^-1/2
        rules = dict(MUP_RULES)
        for role in (Role.HIDDEN, Role.GATE_PROJ):
            rules[role] = dataclasses.replace(rules[role], init=Init('normal', e))
        PRESETS[f'i-hid-{tag}'] = dict(PRESETS['mup'], rules=rules)
    combo('k-vec0+mlp+.5', {'embedding': 0, 'conv': 0, 'norm': 0}, {'*.mlp.*_proj.weight': 0.5})
    combo('k-vec0+mlp+1', {'embedding': 0, 'conv': 0, 'norm': 0}, {'*.mlp.*_proj.weight': 1.0})
    # the same without the width-consistent clip: '<name>-raw'
    for name in list(PRESETS):
        pr = PRESETS[name]
        PRESETS[name + '-raw'] = dict(pr, rules={r: dataclasses.replace(rule, grad_exp={}) for r, rule in pr['rules'].items()})
        if name in NAMED: NAMED[name + '-raw'] = NAMED[name]
        if name in CONST: CONST[name + '-raw'] = CONST[name]

def trial(args):
    register()
    torch.set_num_threads(1)
    from gdn.config import GDNConfig
    from gdn.spec import OptimizerSpec
    from gdn.spec import ScheduleSpec, SweepConfig, TrialSpec
    from gdn.train import train_trial
    param, om, im, width, lr, seed, steps, base, clip, batch = args
    cfg = SweepConfig(model=GDNConfig(width=base, depth=2), parametrization=param, output_mult=om, init_mult=im,
                      optimizer=OptimizerSpec(name='sgd', grad_clip=clip),
                      schedule=ScheduleSpec(steps=steps, warmup_steps=steps // 10, batch_size=batch, seq_len=64), eval_batches=16)
    r = train_trial(TrialSpec(cfg, lr=lr, seed=seed, width=width, device='cpu'))
    return dict(param=param, om=om, im=im, width=width, lr=lr, seed=seed, steps=steps, base=base, clip=clip, batch=batch,
                status=r.status, val=r.final_val_loss, sec=r.seconds)

if __name__ == '__main__':
    spec = json.loads(sys.argv[1]); out = sys.argv[2]
    jobs = []
    for arm in spec['arms']:
        for w in spec['widths']:
            for k in arm.get('grid_%d' % w, arm['grid']):
                for s in spec.get('seeds', [0]):
                    jobs.append((arm['param'], arm.get('om', 1.0), arm.get('im', 1.0), w, 2 ** (k / 2), s,
                                 spec.get('steps', 250), spec.get('base', 32), arm.get('clip', 1.0), spec.get('batch', 8)))
    done = set()
    if os.path.exists(out):
        for line in open(out):
            d = json.loads(line); done.add((d['param'], d['om'], d['im'], d['width'], d['lr'], d['seed'], d['steps'], d['base'], d['clip'], d.get('batch', 8)))
    jobs = [j for j in jobs if j not in done]
    jobs.sort(key=lambda j: -j[3])
    print(len(jobs), 'trials', flush=True)
    with mp.get_context('spawn').Pool(spec.get('workers', 2)) as pool, open(out, 'a') as f:
        for r in pool.imap_unordered(trial, jobs):
            f.write(json.dumps(r) + '\n'); f.flush()
