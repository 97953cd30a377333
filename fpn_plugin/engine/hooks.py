"""Training hooks switched on from the config (see ``Trainer.build_hooks``)."""
import logging
import operator
from collections import defaultdict

import torch
from detectron2.engine import HookBase
from detectron2.engine import hooks as d2_hooks
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter
from torch.nn.parallel import DistributedDataParallel

from .rng import preserve_rng_state

__all__ = [
    "LRScheduler",
    "EarlyStopping",
    "ValidationLoss",
    "PlotCurves",
    "PeriodicWriter",
    "BestCheckpointer",
    "is_eval_iteration",
]

logger = logging.getLogger(__name__)

# torch >= 2.0 schedulers subclass LRScheduler; only the deprecated alias is _LRScheduler.
_TORCH_SCHEDULERS = tuple(
    c
    for c in (getattr(torch.optim.lr_scheduler, "LRScheduler", None), torch.optim.lr_scheduler._LRScheduler)
    if c is not None
)


def is_eval_iteration(trainer, period: int) -> bool:
    """EvalHook's rule: every ``period`` iterations, except the last (done in after_train)."""
    next_iter = trainer.iter + 1
    return period > 0 and next_iter % period == 0 and next_iter != trainer.max_iter


def is_final(trainer) -> bool:
    """after_train of a run that reached MAX_ITER (not one that failed or stopped early)."""
    return trainer.iter + 1 >= trainer.max_iter


class LRScheduler(d2_hooks.LRScheduler):
    """detectron2's LRScheduler hook, saving the state of every torch scheduler.

    detectron2 0.6 saves the scheduler only for subclasses of ``_LRScheduler``; torch 2's own
    schedulers (``StepLR``, ``OneCycleLR`` ...) subclass ``LRScheduler`` instead, so a resume
    silently restarted their schedule. The class keeps detectron2's name, so checkpoints of
    either hook load into the other.
    """

    def state_dict(self):
        if isinstance(self.scheduler, _TORCH_SCHEDULERS):
            return self.scheduler.state_dict()
        return {}

    def load_state_dict(self, state_dict):
        if isinstance(self.scheduler, _TORCH_SCHEDULERS):
            logger.info("Loading scheduler from state_dict ...")
            self.scheduler.load_state_dict(state_dict)


class EarlyStopping(HookBase):
    """Stop training when an evaluation metric stopped improving.

    Register it after the ``EvalHook``. At each evaluation it reads ``metric`` from the event
    storage; an evaluation counts as progress when it beats the value of the last progress by
    more than ``min_delta``. After ``patience`` evaluations in a row without progress it asks
    the trainer to stop (``trainer.request_stop``). The best value and its iteration are the
    plain best (as ``BestCheckpointer`` keeps it), reported when it stops. Its counters are
    saved in checkpoints.
    """

    def __init__(self, eval_period: int, metric: str, patience: int, min_delta: float = 0.0, mode: str = "max"):
        if mode not in ("max", "min"):
            raise ValueError(f"TEST.EARLY_STOPPING.MODE is {mode!r}; choose 'max' or 'min'.")
        if patience < 1 or eval_period <= 0:
            raise ValueError(
                f"Early stopping needs TEST.EARLY_STOPPING.PATIENCE >= 1 (got {patience}) and "
                f"TEST.EVAL_PERIOD > 0 (got {eval_period})."
            )
        self._period = eval_period
        self.metric, self.patience, self.min_delta, self.mode = metric, patience, min_delta, mode
        self.best = self.best_iter = None  # the best value so far, at any margin
        self.progress = self.progress_iter = None  # the last value that beat by > min_delta
        self.bad_evals = 0

    def _better(self, value: float, than, margin: float) -> bool:
        if than is None:
            return True
        return value > than + margin if self.mode == "max" else value < than - margin

    def after_step(self):
        # Evaluators return results on the main process only; the trainer passes its decision
        # to the other processes (Trainer._should_stop).
        if not is_eval_iteration(self.trainer, self._period) or not comm.is_main_process():
            return
        latest = self.trainer.storage.latest().get(self.metric)
        if latest is None or latest[1] != self.trainer.iter:
            logger.warning(
                f"Early stopping watches {self.metric!r}, which the evaluation at iteration "
                f"{self.trainer.iter} did not produce; known metrics: "
                f"{sorted(k for k in self.trainer.storage.latest() if '/' in k)}."
            )
            return
        value = float(latest[0])
        if self._better(value, self.best, 0.0):
            self.best, self.best_iter = value, self.trainer.iter
        if self._better(value, self.progress, self.min_delta):
            self.progress, self.progress_iter, self.bad_evals = value, self.trainer.iter, 0
            return
        self.bad_evals += 1
        logger.info(
            f"Early stopping: {self.metric}={value:.5g} did not improve on {self.progress:.5g} "
            f"(iteration {self.progress_iter}) by more than {self.min_delta}: {self.bad_evals}/{self.patience}."
        )
        if self.bad_evals >= self.patience:
            self.trainer.request_stop(
                f"early stopping: {self.metric} has not improved by more than {self.min_delta} on "
                f"{self.progress:.5g} (iteration {self.progress_iter}) for {self.patience} "
                f"evaluations; best {self.best:.5g} at iteration {self.best_iter}"
            )

    def state_dict(self):
        return {"best": self.best, "best_iter": self.best_iter, "bad_evals": self.bad_evals,
                "progress": self.progress, "progress_iter": self.progress_iter}

    def load_state_dict(self, state):
        self.best, self.best_iter, self.bad_evals = state["best"], state["best_iter"], state["bad_evals"]
        # Checkpoints of before the two were told apart hold only "best".
        self.progress = state.get("progress", self.best)
        self.progress_iter = state.get("progress_iter", self.best_iter)


def _set_norms_to_eval(model):
    """Put normalization layers with running statistics in eval mode; return them."""
    norms = [
        m
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.training and m.track_running_stats
    ]
    for m in norms:
        m.eval()
    return norms


class ValidationLoss(HookBase):
    """Compute the training losses on held-out data, without gradients, and log them.

    The model runs in training mode (detection models only return losses then) with its
    batch-norm statistics frozen and the random generators fenced off, so the validation
    changes neither the model nor the training's random draws. Each process takes a share of
    the data; the means over all images are stored as ``val/<loss name>`` and
    ``val/total_loss``, next to the training losses in ``metrics.json`` and TensorBoard.

    Args:
        period (int): iterations between validations (and one after the last iteration).
        data_loader_fn (callable): returns an iterable of batches (lists of dataset dicts
            mapped for training), e.g. a test loader with ``DatasetMapper(cfg, is_train=True)``.
    """

    def __init__(self, period: int, data_loader_fn):
        self._period = period
        self._data_loader_fn = data_loader_fn

    def _model(self):
        model = self.trainer.model
        return model.module if isinstance(model, DistributedDataParallel) else model

    def compute(self) -> dict:
        """Return {name: mean over the validation images} (the same on every process)."""
        model = self._model()
        sums, count = defaultdict(float), 0
        with preserve_rng_state(), torch.no_grad():
            norms = _set_norms_to_eval(model)
            try:
                for batch in self._data_loader_fn():
                    loss_dict = model(batch)
                    if isinstance(loss_dict, torch.Tensor):
                        loss_dict = {"total_loss": loss_dict}
                    for name, value in loss_dict.items():
                        sums[name] += float(value) * len(batch)
                    count += len(batch)
            finally:
                for m in norms:
                    m.train()
        parts = comm.all_gather((dict(sums), count))
        total = sum(c for _, c in parts)
        if total == 0:
            raise ValueError("The validation-loss datasets (TEST.VAL_LOSS.DATASETS) have no images.")
        names = sorted({n for s, _ in parts for n in s})
        means = {n: sum(s.get(n, 0.0) for s, _ in parts) / total for n in names}
        if "total_loss" not in means:
            means["total_loss"] = sum(means.values())
        return means

    def _run(self):
        means = self.compute()
        self.trainer.storage.put_scalars(**{f"val/{k}": v for k, v in means.items()}, smoothing_hint=False)
        logger.info(
            "Validation loss at iteration {}: {}".format(
                self.trainer.iter, ", ".join(f"{k}={v:.4f}" for k, v in means.items())
            )
        )

    def after_step(self):
        if is_eval_iteration(self.trainer, self._period):
            self._run()

    def after_train(self):
        if is_final(self.trainer):
            self._run()


class PlotCurves(HookBase):
    """Write PNG plots of losses, learning rate and evaluation metrics (main process).

    Refreshed every ``period`` iterations (the evaluation period) and at the end of training,
    from the event storage and, for iterations before a resume, from ``metrics.json``.
    """

    def __init__(self, period: int, output_dir: str, metrics_json: str):
        self._period = period
        self._output_dir = output_dir
        self._metrics_json = metrics_json

    def _write(self):
        from .plots import collect_series, plot_curves

        series = collect_series(self.trainer.storage, self._metrics_json, self.trainer.start_iter)
        paths = plot_curves(series, self._output_dir)
        logger.info("Plots written: {}".format(", ".join(paths)))

    def after_step(self):
        if is_eval_iteration(self.trainer, self._period):
            self._write()

    def after_train(self):
        self._write()


class PeriodicWriter(d2_hooks.PeriodicWriter):
    """detectron2's PeriodicWriter, also writing right after each evaluation.

    detectron2's ``JSONWriter`` writes only the latest value of each scalar: with an
    evaluation (or validation loss) period shorter than the writer's, the results of all but
    the last evaluation between two writes would never reach ``metrics.json``.

    Args:
        writers, period: as detectron2's.
        eval_periods (list[int]): periods of the hooks whose results must all be written.
    """

    def __init__(self, writers, period=20, eval_periods=()):
        super().__init__(writers, period)
        self._eval_periods = [p for p in eval_periods if p > 0]
        self._written_iter = None

    def after_step(self):
        it = self.trainer.iter
        if (it + 1) % self._period == 0 or it == self.trainer.max_iter - 1 or any(
            is_eval_iteration(self.trainer, p) for p in self._eval_periods
        ):
            for writer in self._writers:
                writer.write()
            self._written_iter = it

    def after_train(self):
        # detectron2's printer skips its line after a run that reached MAX_ITER only; after an
        # early stop it would print the last iteration's line a second time.
        for writer in self._writers:
            if not (isinstance(writer, CommonMetricPrinter) and self.trainer.iter == self._written_iter):
                writer.write()
            writer.close()


class BestCheckpointer(d2_hooks.BestCheckpointer):
    """detectron2's BestCheckpointer, whose best value survives a resume.

    detectron2's keeps the best value in memory only: after a resume the first evaluation
    would overwrite ``model_best.pth`` even when it is worse than the best before the kill.
    """

    def state_dict(self):
        return {"best_metric": self.best_metric, "best_iter": self.best_iter}

    def load_state_dict(self, state):
        self.best_metric, self.best_iter = state["best_metric"], state["best_iter"]
