"""Child process for the checkpoint fuzz test: write a checkpoint, then for each edit of
one of its fields try to resume from the edited file.  Prints one line per edit:
'<edit> refused <message>' or '<edit> accepted'.  A crash shows as the child's exit code."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np

import fastbp

root = Path(sys.argv[1])
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
rng = np.random.default_rng(seed)
X = rng.standard_normal((200, 6)).astype(np.float32)
y = rng.integers(0, 3, 200)


def run(ck, epochs=3):
    m = fastbp.MLP([6, 8, 3], seed=0)
    opt = fastbp.Adam(m, lr=1e-2)
    fastbp.fit(m, X, y, optimizer=opt, batch_size=32, epochs=epochs, verbose=0, seed=0,
               checkpoint_dir=ck, checkpoint_every=3, resume=True)
    return m


good = root / "good"
run(good, epochs=1)
with np.load(good / "checkpoint.npz") as f:
    base = dict(f.items())
meta0 = json.loads(str(base["meta"]))

EDITS = {
    "order past n": lambda a, m: a["order"].__setitem__(5, 10**9),
    "order = n": lambda a, m: a["order"].__setitem__(5, 200),
    "order negative": lambda a, m: a["order"].__setitem__(5, -3),
    "order duplicate": lambda a, m: a["order"].__setitem__(5, a["order"][6]),
    "order short": lambda a, m: a.__setitem__("order", a["order"][:1]),
    "order float": lambda a, m: a.__setitem__("order", a["order"].astype(np.float64)),
    "params one value": lambda a, m: a.__setitem__("params", np.array([0.25], np.float32)),
    "params float64": lambda a, m: a.__setitem__("params", a["params"].astype(np.float64)),
    "params NaN": lambda a, m: a["params"].__setitem__(3, np.nan),
    "params 2-D": lambda a, m: a.__setitem__("params", a["params"].reshape(1, -1)),
    "good_params short": lambda a, m: a.__setitem__("good_params", a["good_params"][:5]),
    "opt state short": lambda a, m: a.__setitem__("opt_exp_avg", a["opt_exp_avg"][:3]),
    "opt state missing": lambda a, m: a.pop("opt_exp_avg_sq"),
    "epoch -5": lambda a, m: m.__setitem__("epoch", -5),
    "epoch text": lambda a, m: m.__setitem__("epoch", "2"),
    "pos past n": lambda a, m: m.__setitem__("pos", 10**6),
    "pos negative": lambda a, m: m.__setitem__("pos", -1),
    "step negative": lambda a, m: m.__setitem__("step", -7),
    "seen negative": lambda a, m: m.__setitem__("seen", -7),
    "correct past n": lambda a, m: m.__setitem__("correct", 10**9),
    "total_loss NaN": lambda a, m: m.__setitem__("total_loss", float("nan")),
    "opt step_count -1": lambda a, m: m["optimizer"].__setitem__("step_count", -1),
    "opt lr negative": lambda a, m: m["optimizer"].__setitem__("lr", -1.0),
    "opt beta2 1": lambda a, m: m["optimizer"].__setitem__("beta2", 1.0),
    "opt unknown key": lambda a, m: m["optimizer"].__setitem__("velocity2", 3),
    "rng garbage": lambda a, m: m.__setitem__("rng", {"state": 3}),
    "history garbage": lambda a, m: m.__setitem__("history", [1, 2]),
    "schedule garbage": lambda a, m: m.__setitem__("schedule", {"lr": "x", "nope": 1}),
    "meta missing key": lambda a, m: m.pop("bad_epochs"),
    "best_epoch past": lambda a, m: m.__setitem__("best_epoch", 10**6),
    "samples_seen text": lambda a, m: m.__setitem__("samples_seen", "many"),
}

for name, edit in EDITS.items():
    arrays = {k: np.array(v) for k, v in base.items() if k != "meta"}
    meta = json.loads(json.dumps(meta0))
    edit(arrays, meta)
    d = root / name.replace(" ", "_")
    d.mkdir()
    np.savez(d / "checkpoint.npz", meta=np.array(json.dumps(meta)), **arrays)
    try:
        run(d)
        print(f"{name} accepted", flush=True)
    except ValueError as exc:
        print(f"{name} refused {str(exc).splitlines()[0]}", flush=True)
# Random edits: a random field gets a random value of a random kind.  Refused or
# trained, never a crash (the child's exit code shows one).
GARBAGE = [lambda r: int(r.integers(-10**12, 10**12)), lambda r: float(r.standard_normal()),
           lambda r: None, lambda r: "x", lambda r: [1, 2], lambda r: {"a": 1},
           lambda r: float("nan"), lambda r: True, lambda r: 0, lambda r: -1]
n_random = int(sys.argv[3]) if len(sys.argv) > 3 else 0
for t in range(n_random):
    arrays = {k: np.array(v) for k, v in base.items() if k != "meta"}
    meta = json.loads(json.dumps(meta0))
    if rng.random() < 0.5:
        key = str(rng.choice(sorted(k for k in meta if k != "version")))
        meta[key] = GARBAGE[int(rng.integers(len(GARBAGE)))](rng)
    else:
        key = str(rng.choice(sorted(arrays)))
        a = arrays[key]
        choice = int(rng.integers(4))
        if choice == 0 and a.size:                      # one element changed
            a.flat[int(rng.integers(a.size))] = rng.integers(-10**9, 10**9)
        elif choice == 1:                               # truncated
            arrays[key] = a[:int(rng.integers(0, max(a.size, 1)))]
        elif choice == 2:                               # another dtype
            arrays[key] = a.astype(rng.choice([np.float64, np.int32, np.float32]))
        else:                                           # gone
            arrays.pop(key)
    d = root / f"random{t}"
    d.mkdir()
    np.savez(d / "checkpoint.npz", meta=np.array(json.dumps(meta)), **arrays)
    try:
        run(d)
        print(f"random {key} trained", flush=True)
    except fastbp.TrainingDiverged:     # a valid but absurd value (a weight of 1e9)
        print(f"random {key} trained and diverged", flush=True)
    except ValueError as exc:
        print(f"random {key} refused {str(exc).splitlines()[0]}", flush=True)
print("done", flush=True)
