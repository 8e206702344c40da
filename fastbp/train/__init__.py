"""The trainer: fastbp.fit(model, X, y, optimizer=...) -> History.

    loop.py       fit: epochs, validation, early stopping, schedules, callbacks, Ctrl-C
    compiled.py   the CPU epoch as chunks of steps inside one compiled call (run_steps)
    split.py      how a compiled step is shared among threads (and whether it pays)
    cuda.py       the CUDA epoch: batches gathered and losses summed on the device
    state.py      what a checkpoint carries, and writing and reading it
    callbacks.py  CSVLogger, and how fit finds a callback's hooks
"""
from .callbacks import CSVLogger
from .loop import fit
from .state import History, TrainingDiverged

__all__ = ["CSVLogger", "History", "TrainingDiverged", "fit"]
