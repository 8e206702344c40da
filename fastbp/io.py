"""Saving, loading and moving weights to and from PyTorch.

Files are written atomically: the data goes to a temporary file in the destination folder,
is flushed to disk, and is then renamed over the destination, so a crash mid-write leaves
the previous file intact.

A model file is an .npz holding:
    params            the flat parameter buffer (its dtype is the model's dtype)
    config            JSON: sizes, activation, loss, dtype, init, format version
    extra_<name>      optional arrays saved alongside (a scaler, class names, ...)
"""
import contextlib
import json
import os
import socket
import tempfile
import zipfile

import numpy as np

FORMAT_VERSION = 1


def _temp_prefix():
    return f".tmp-{socket.gethostname()}-{os.getpid()}-"


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True             # someone else's process: leave its file alone
    return True


def remove_stale_temps(folder, name):
    """Delete the temporary files a killed writer of `name` left in folder: those of this
    host whose process is gone (a live writer's file, or another host's, is kept)."""
    host = f".tmp-{socket.gethostname()}-"
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        if not (entry.startswith(host) and entry.endswith("-" + name)):
            continue
        pid = entry[len(host):].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, entry))


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file beside `path`; on success, fsync and rename it over `path`.
    The temporary file's name holds this host and process, so that the next write of
    `path` removes what a killed writer left (remove_stale_temps)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"folder {folder!r} does not exist")
    remove_stale_temps(folder, os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(), suffix="-" + os.path.basename(path),
                               dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_model(path, config, params, **extra):
    """Write a model's config (a JSON-able dict), flat parameters and extra arrays to path,
    atomically."""
    config = dict(config, format_version=FORMAT_VERSION)
    arrays = {"params": params, "config": np.array(json.dumps(config))}
    for name, value in extra.items():
        arr = np.asarray(value)
        if arr.dtype == object:
            raise TypeError(f"extra array {name!r} must not be of object dtype")
        arrays["extra_" + name] = arr
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def read_model(path):
    """(config, params, extra arrays) from a file written by save_model; no pickles are
    loaded.  fastbp.load builds the model from them."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path!r} is not a fastbp model file (an .npz written by MLP.save)")
    try:
        with np.load(path, allow_pickle=False) as data:
            files = dict(data.items())
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path!r} is not a fastbp model file (.npz): {exc}") from exc
    if "params" not in files or "config" not in files:
        raise ValueError(f"{path!r} is not a fastbp model file: missing 'params' or 'config'")
    try:
        config = json.loads(str(files["config"]))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path!r} has a corrupt config: {exc}") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{path!r} has a corrupt config: not a JSON object")
    version = config.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise ValueError(f"{path!r} has model format version {version}, this fastbp reads "
                         f"{FORMAT_VERSION}")
    missing = {"sizes", "activation", "loss", "dtype"} - set(config)
    if missing:
        raise ValueError(f"{path!r} has a corrupt config: missing {sorted(missing)}")
    extra = {k[len("extra_"):]: v for k, v in files.items() if k.startswith("extra_")}
    return config, files["params"], extra


def to_torch_state_dict(weights, biases, dropout=None):
    """Weights under the keys of torch.nn.Sequential(Linear, act, Linear, ..., Linear):
    "0.weight", "0.bias", "2.weight", ...; with dropout (one bool per hidden layer), a
    Dropout module after the activations of those layers shifts the later keys ("0.weight",
    "3.weight", ...).  Values are NumPy copies (MLP.to_torch_state_dict turns them into
    tensors on request)."""
    sd = {}
    i = 0
    for l in range(len(weights)):
        sd[f"{i}.weight"] = np.array(weights[l])
        sd[f"{i}.bias"] = np.array(biases[l])
        i += 3 if dropout is not None and l < len(dropout) and dropout[l] else 2
    return sd


def _to_numpy(value):
    if hasattr(value, "detach"):  # a torch tensor, converted without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def state_dict_layers(state_dict):
    """(sizes, weights, biases) from the state dict of a torch.nn.Sequential whose Linear
    layers sit at indices 0, 2, 4, ... (an activation between them, and perhaps a Dropout:
    the next Linear 3 further on); MLP.from_torch_state_dict builds the model."""
    keys = [k for k in state_dict if k.endswith(".weight")]
    try:
        idx = sorted(int(k.split(".")[0]) for k in keys)
    except ValueError:
        raise ValueError(f"state dict keys must look like '0.weight', '2.bias', ...; got "
                         f"{list(state_dict)[:4]}") from None
    if not idx or idx[0] != 0 or any(b - a not in (2, 3) for a, b in zip(idx, idx[1:])):
        raise ValueError("expected the keys of torch.nn.Sequential(Linear, act, Linear, ...): "
                         f"'0.weight', '0.bias', '2.weight', ...; got {list(state_dict)[:6]}")
    weights = [_to_numpy(state_dict[f"{i}.weight"]) for i in idx]
    biases = [_to_numpy(state_dict.get(f"{i}.bias", np.zeros(w.shape[0])))
              for i, w in zip(idx, weights)]
    sizes = [weights[0].shape[1]] + [w.shape[0] for w in weights]
    for l, (w, b) in enumerate(zip(weights, biases)):
        if w.ndim != 2 or w.shape[1] != sizes[l] or b.shape != (w.shape[0],):
            raise ValueError(f"layer {idx[l]}: weight {w.shape} / bias {b.shape} do not chain "
                             f"with the previous layer's {sizes[l]} outputs")
    return sizes, weights, biases
