"""Learning-rate schedules, applied at the end of each epoch.

A schedule sees the optimizer's starting learning rate in start() and returns the rate for
the next epoch from on_epoch_end(epoch, logs) (epoch counts from 0; logs holds the epoch's
"loss", "val_loss", "samples_seen", ...).  Pass one to fastbp.fit(lr_schedule=...), or its
name: "constant", "step", "cosine", "invscaling", "plateau".
"""
import math

from ._validation import check_float, check_positive_int


class LRSchedule:
    def start(self, base_lr, epochs):
        self.base_lr = float(base_lr)
        self.epochs = int(epochs)
        self.lr = self.base_lr
        return self.lr

    def on_epoch_end(self, epoch, logs):
        return self.lr


class ConstantLR(LRSchedule):
    """The learning rate never changes."""


class StepLR(LRSchedule):
    """lr = base_lr * gamma ** ((epoch + 1) // step_size), as torch.optim.lr_scheduler.StepLR."""

    def __init__(self, step_size=10, gamma=0.1):
        self.step_size = check_positive_int(step_size, "step_size")
        self.gamma = check_float(gamma, "gamma", 0.0, low_open=True)

    def on_epoch_end(self, epoch, logs):
        self.lr = self.base_lr * self.gamma ** ((epoch + 1) // self.step_size)
        return self.lr


class CosineLR(LRSchedule):
    """lr = eta_min + (base_lr - eta_min) (1 + cos(pi (epoch+1) / T_max)) / 2; T_max defaults
    to the number of epochs (torch's CosineAnnealingLR)."""

    def __init__(self, T_max=None, eta_min=0.0):
        self.T_max = None if T_max is None else check_positive_int(T_max, "T_max")
        self.eta_min = check_float(eta_min, "eta_min", 0.0)

    def on_epoch_end(self, epoch, logs):
        t_max = self.T_max or max(self.epochs, 1)
        frac = min(epoch + 1, t_max) / t_max
        self.lr = self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * frac)) / 2
        return self.lr


class InverseScalingLR(LRSchedule):
    """lr = base_lr / (samples_seen + 1) ** power_t (scikit-learn's learning_rate="invscaling")."""

    def __init__(self, power_t=0.5):
        self.power_t = check_float(power_t, "power_t", 0.0)

    def on_epoch_end(self, epoch, logs):
        self.lr = self.base_lr / (logs["samples_seen"] + 1) ** self.power_t
        return self.lr


class ReduceLROnPlateau(LRSchedule):
    """Divide the rate by 1/factor when the monitored loss has not improved by `threshold`
    for more than `patience` epochs (patience=1, factor=0.2 is scikit-learn's "adaptive").
    Monitors "val_loss" when there is validation data, else "loss"."""

    def __init__(self, factor=0.2, patience=1, threshold=1e-4, min_lr=1e-6, monitor=None):
        self.factor = check_float(factor, "factor", 0.0, 1.0, low_open=True)
        self.patience = int(patience)
        self.threshold = check_float(threshold, "threshold", 0.0)
        self.min_lr = check_float(min_lr, "min_lr", 0.0)
        self.monitor = monitor

    def start(self, base_lr, epochs):
        self.best = math.inf
        self.bad_epochs = 0
        return super().start(base_lr, epochs)

    def on_epoch_end(self, epoch, logs):
        key = self.monitor or ("val_loss" if logs.get("val_loss") is not None else "loss")
        value = logs[key]
        if value < self.best - self.threshold:
            self.best = value
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:
                self.lr = max(self.lr * self.factor, self.min_lr)
                self.bad_epochs = 0
        return self.lr


SCHEDULES = {
    "constant": ConstantLR, "step": StepLR, "cosine": CosineLR,
    "invscaling": InverseScalingLR, "plateau": ReduceLROnPlateau,
}


def make_schedule(spec):
    """A schedule object from None, a name, or a schedule instance."""
    if spec is None:
        return ConstantLR()
    if isinstance(spec, str):
        try:
            return SCHEDULES[spec]()
        except KeyError:
            raise ValueError(
                f"unknown lr_schedule {spec!r}; expected one of {sorted(SCHEDULES)} "
                "or an LRSchedule instance"
            ) from None
    if isinstance(spec, LRSchedule):
        return spec
    raise TypeError(f"lr_schedule must be a name or an LRSchedule, got {type(spec).__name__}")
