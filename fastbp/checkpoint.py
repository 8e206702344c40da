"""Training checkpoints: everything fastbp.fit needs to continue a run exactly.

A checkpoint is one .npz written atomically (fastbp.io.atomic_write), holding the model's
flat parameters, the optimizer's state buffers, the epoch's shuffled order, the last
finite epoch's and the best epoch's parameters, and a JSON record of the rest: epoch and
position in it, the partial sums of the epoch's loss and accuracy, the RNG state after the
epoch's shuffle, the learning-rate schedule's state, early-stopping counters and the
history.  Resuming from it replays the remaining steps on the same batches in the same
order, so the run ends with bit-identical weights.
"""
import json
import os

import numpy as np

from .io import atomic_write

FILENAME = "checkpoint.npz"
VERSION = 1


def path_in(checkpoint_dir):
    return os.path.join(os.fspath(checkpoint_dir), FILENAME)


def save(checkpoint_dir, meta, arrays):
    """Write meta (JSON-able dict) and arrays (name -> ndarray) atomically."""
    os.makedirs(checkpoint_dir, exist_ok=True)
    payload = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
    payload["meta"] = np.array(json.dumps(dict(meta, version=VERSION)))
    with atomic_write(path_in(checkpoint_dir)) as f:
        np.savez(f, **payload)


def load(checkpoint_dir):
    """(meta, arrays) of the checkpoint in checkpoint_dir, or None if there is none."""
    path = path_in(checkpoint_dir)
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays.pop("meta")))
    except Exception as exc:
        raise ValueError(f"cannot read checkpoint {path!r}: {exc}") from exc
    if meta.get("version") != VERSION:
        raise ValueError(f"checkpoint {path!r} has version {meta.get('version')}, "
                         f"expected {VERSION}")
    return meta, arrays
