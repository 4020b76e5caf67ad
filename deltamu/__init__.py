"""deltamu for users: tune the learning rate of a GDN language model on a small proxy, carry it to any width.

    import deltamu
    rec = deltamu.Client(url, token).job(job_id).recommendation(2048)   # or deltamu.recommend(result, 2048)
    optimizer = torch.optim.AdamW(deltamu.apply(model, rec))   # our GDNModel or fla's: checked, initialised,
                                                               # its forward multipliers installed, its groups

The service (`service`), its workers (`worker`) and the science library (`gdn`) keep their own top-level packages,
the layout the design card names; this package is the public face over them. Imports are lazy: `import deltamu`
loads neither torch nor the HTTP client until one of them is used.
"""
from __future__ import annotations

_LAZY = {
    "Client": "deltamu.client",
    "ApiError": "deltamu.client",
    "Job": "deltamu.client",
    "recommend": "gdn.recommend",
    "param_groups": "gdn.recommend",
    "apply": "gdn.apply",
    "recommendation_from_dict": "gdn.recommend",
    "SweepResult": "gdn.recommend",
    "Recommendation": "gdn.spec",
    "SweepConfig": "gdn.spec",
    "TrialSpec": "gdn.spec",
    "GDNConfig": "gdn.config",
    "run": "gdn.train",
    "fit_optimum": "gdn.fit",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deltamu' has no attribute {name!r}")
