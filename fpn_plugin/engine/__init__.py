"""Training: the trainer, its hooks, schedules and precision."""
from .atomic_save import AtomicDetectionCheckpointer, AtomicPluginCheckpointer, AtomicSaveMixin
from .launch import launch
from .precision import Precision, resolve_precision
from .schedule import apply_epochs, scale_schedule
from .trainer import Trainer, TrainingDivergedError
from .train_loop import AccumulatingTrainer, NonFiniteLossError

__all__ = [
    "AccumulatingTrainer",
    "AtomicDetectionCheckpointer",
    "AtomicPluginCheckpointer",
    "AtomicSaveMixin",
    "NonFiniteLossError",
    "Precision",
    "Trainer",
    "TrainingDivergedError",
    "apply_epochs",
    "launch",
    "resolve_precision",
    "scale_schedule",
]
