"""Slow, obvious NumPy oracle of kernels/README.md (float64, one stream, one step at a time).

- ``params``: the Config (named like the engine's Spec), the parameter layout, flatten/unflatten.
- ``cells``: one step of every cell, head and loss, with hand-written backwards.
- ``rules``: BPTT, exact RTRL, TBPTT(k1, k2), SnAp-1.
- ``learner``: the online SGD loop ("test, then train") behind the engine's step() signature.
- ``cases``: small random models and sequences for the self-checks.
"""
