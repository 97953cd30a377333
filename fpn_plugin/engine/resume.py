"""Exact resume: what a training checkpoint holds besides the model, and loading it back.

:class:`ResumableTrainerMixin` gives a detectron2 trainer the optimizer, scheduler, iteration,
random generators (each process's) and data order in its checkpoints, and
``resume_or_load`` that restores them or, for fine-tuning, loads the model weights only.
"""
import logging

from detectron2.engine import TrainerBase
from detectron2.engine import hooks as d2_hooks
from detectron2.solver import LRMultiplier
from detectron2.utils import comm

from .rng import get_rng_state, set_rng_state

__all__ = ["ResumableTrainerMixin"]

logger = logging.getLogger(__name__)


class ResumableTrainerMixin:
    """Checkpointable state and resume for :class:`~fpn_plugin.engine.trainer.Trainer`.

    Expects what the trainer sets up: ``cfg``, ``checkpointer``, ``optimizer``, ``scheduler``,
    ``_trainer`` (the :class:`~.train_loop.AccumulatingTrainer`), ``train_sampler`` (a
    resumable sampler or None), ``iter``, ``start_iter`` and ``max_iter``.
    """

    def _lr(self) -> float:
        group = d2_hooks.LRScheduler.get_best_param_group_id(self.optimizer)
        return self.optimizer.param_groups[group]["lr"]

    def resume_or_load(self, resume=True):
        """Resume from OUTPUT_DIR's last checkpoint, or load MODEL.WEIGHTS only; log which.

        ``resume=True`` with a checkpoint in ``OUTPUT_DIR`` restores model, optimizer,
        scheduler, iteration, random generators and data order. Otherwise the model weights of
        ``MODEL.WEIGHTS`` (if any) are loaded, and optimizer, schedule and iteration start fresh
        from the config: the LR is the config's, never a checkpoint's.
        """
        out = self.cfg.OUTPUT_DIR
        if resume and self.checkpointer.has_checkpoint():
            path = self.checkpointer.get_checkpoint_file()
            self.checkpointer.load(path)
            self.start_iter = self.iter + 1
            logger.info(
                f"Resuming from {path}: model, optimizer, LR scheduler, iteration and data order "
                f"restored; training continues at iteration {self.start_iter} of {self.max_iter} "
                f"with LR {self._lr():.6g}."
            )
            return
        if resume:
            logger.info(f"--resume: no checkpoint in {out} (no last_checkpoint file), so a new training starts.")
        weights = self.cfg.MODEL.WEIGHTS
        if weights:
            self.checkpointer.load(weights, checkpointables=[])
            how = f"Fine-tuning: loaded the model weights only from {weights}"
        else:
            how = "Training from scratch (MODEL.WEIGHTS is empty)"
        self.start_iter = 0
        logger.info(
            f"{how}; optimizer, LR schedule and iteration start fresh from the config: "
            f"iteration 0 of {self.max_iter}, LR {self._lr():.6g} (SOLVER.BASE_LR "
            f"{self.cfg.SOLVER.BASE_LR:.6g}, warmup {self.cfg.SOLVER.WARMUP_ITERS} iterations)."
        )

    def state_dict(self):
        # TrainerBase's, not DefaultTrainer's: detectron2 0.6's DefaultTrainer saves no
        # optimizer state, git main's saves and loads it as "_trainer" (and fails on a
        # checkpoint without it); the same key is written and read here on both.
        ret = TrainerBase.state_dict(self)
        ret["_trainer"] = self._trainer.state_dict()
        ret["rng"] = get_rng_state()
        gathered = getattr(self, "_rng_per_rank", None)
        if comm.get_world_size() > 1 and gathered is not None and gathered[0] == self.iter:
            ret["rng_per_rank"] = gathered[1]
        if self.train_sampler is not None:
            ret["data"] = {"seed": self.train_sampler.seed}
        return ret

    def load_state_dict(self, state_dict):
        TrainerBase.load_state_dict(self, state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logger.warning("The checkpoint has no optimizer state: the optimizer starts fresh.")
        if isinstance(self.scheduler, LRMultiplier):
            # The optimizer's saved LR is the one the *saved* schedule computed; if MAX_ITER or
            # STEPS changed for this run (e.g. to train longer), this run's schedule decides.
            for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_lr()):
                group["lr"] = lr
        if "rng" in state_dict:
            if comm.get_world_size() == 1:
                set_rng_state(state_dict["rng"])
            elif len(state_dict.get("rng_per_rank", ())) == comm.get_world_size():
                set_rng_state(state_dict["rng_per_rank"][comm.get_rank()])
            else:  # the checkpoint holds the main process's generators only
                logger.info("Several processes: random generators are not restored, only data order.")
        if self.train_sampler is not None and "data" in state_dict:
            self.train_sampler.seed = state_dict["data"]["seed"]
            per_step = self.cfg.SOLVER.IMS_PER_DEVICE * self.cfg.SOLVER.ACCUMULATION_STEPS
            self.train_sampler.start_at((self.iter + 1) * per_step)
            self._trainer.reset_data_loader()

    def after_step(self):
        # Several processes: only the main one writes checkpoints, from its hooks. Where one may
        # be written (checkpoint and evaluation periods, the last iteration), every process's
        # random generators are gathered first, so that --resume restores each its own.
        if comm.get_world_size() > 1:
            nxt, periods = self.iter + 1, (self.cfg.SOLVER.CHECKPOINT_PERIOD, self.cfg.TEST.EVAL_PERIOD)
            if nxt >= self.max_iter or any(p > 0 and nxt % p == 0 for p in periods):
                self._rng_per_rank = (self.iter, comm.all_gather(get_rng_state()))
        super().after_step()
