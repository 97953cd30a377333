"""Training: the trainer, its hooks, schedules and precision."""
from .atomic_save import AtomicDetectionCheckpointer, AtomicPluginCheckpointer, AtomicSaveMixin
from .launch import launch
from .precision import Precision, resolve_precision
from .schedule import apply_epochs, scale_schedule
from .trainer import Trainer, TrainingDivergedError
from .train_loop import AccumulatingTrainer, NonFiniteLossError

# The rest stays importable from here, as before; __all__ names what a user calls.
__all__ = ["Trainer", "TrainingDivergedError", "launch", "scale_schedule", "apply_epochs"]
