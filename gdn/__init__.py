"""deltamu's science: the GDN proxy model, the muP table, the gated delta rule, training, sweeps, transfer.

Importable with torch alone. The common entry points are re-exported lazily, so `import gdn` stays cheap.
"""
from gdn.config import GDNConfig

_LAZY = {
    "GDNModel": "gdn.model",
    "get_parametrization": "gdn.parametrization",
    "SweepConfig": "gdn.spec",
    "TrialSpec": "gdn.spec",
    "run": "gdn.train",
    "train_trial": "gdn.train",
    "fit_optimum": "gdn.fit",
    "recommend": "gdn.recommend",
    "param_groups": "gdn.recommend",
    "coord_check": "gdn.coordcheck",
}

__all__ = ["GDNConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gdn' has no attribute {name!r}")
