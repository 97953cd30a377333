"""``Trainer``: detectron2's ``DefaultTrainer`` with fpn_plugin's engine, driven by the config."""
import logging
import os
import weakref

from detectron2.data import DatasetMapper, build_detection_test_loader
from detectron2.engine import DefaultTrainer, TrainerBase, create_ddp_model
from detectron2.engine import hooks as d2_hooks
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.events import EventStorage
from detectron2.utils.logger import setup_logger
from fvcore.nn.precise_bn import get_bn_modules

from ..checkpoint.metadata import ModelMetadata
from ..data.register import config_class_names
from ..device import resolve_device
from ..modeling.roi_align import use_configured_roi_align
from ..optional import available, install_hint
from . import hooks
from .atomic_save import AtomicPluginCheckpointer
from .divergence import TrainingDivergedError, divergence_message
from .loaders import build_resumable_train_loader, build_test_loader
from .precision import Precision, resolve_precision
from .resume import ResumableTrainerMixin
from .rng import preserve_rng_state
from .schedule import apply_epochs, epoch_rows, format_table, scale_schedule
from .train_loop import AccumulatingTrainer, LossExplosionGuard, NonFiniteLossError

__all__ = ["Trainer", "TrainingDivergedError"]

logger = logging.getLogger(__name__)


class Trainer(ResumableTrainerMixin, DefaultTrainer):
    """A ``DefaultTrainer`` whose extras are switched on from the config.

    On top of detectron2's trainer (evaluation, periodic checkpoints, LR schedule, writers):

    - ``MODEL.DEVICE: auto`` (CUDA when present); multi-process training on CPU (gloo);
    - the schedule scaled from ``SOLVER.REFERENCE_BATCH_SIZE`` to the batch used
      (processes x ``SOLVER.IMS_PER_DEVICE`` x ``SOLVER.ACCUMULATION_STEPS``), and
      ``SOLVER.EPOCHS``; both printed at start;
    - gradient accumulation and mixed precision (``SOLVER.AMP``, resolved by :mod:`fpn_plugin.precision`);
    - a divergence guard (:class:`TrainingDivergedError`);
    - ``TEST.BEST_CHECKPOINT``, ``TEST.EARLY_STOPPING``, ``TEST.VAL_LOSS``, ``TEST.PLOTS``;
    - exact resume: optimizer, scheduler (any torch scheduler), grad scaler, iteration, random
      generators and data order are saved, in checkpoints written atomically.

    The checkpointer is built in :meth:`build_checkpointer`, the one place to change it.
    """

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()  # setup_logger is not called for d2
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.DEVICE = resolve_device(cfg.MODEL.DEVICE)
        cfg, rows = scale_schedule(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        self.train_sampler = getattr(data_loader, "resumable_sampler", None)
        num_images = getattr(data_loader, "num_images", None)
        if num_images is not None:
            epochs = cfg.SOLVER.EPOCHS
            cfg, per_epoch = apply_epochs(cfg, num_images)
            rows = epoch_rows(rows, epochs, cfg, per_epoch)
            logger.info(
                f"1 epoch = {per_epoch} iterations ({num_images} training images, "
                f"{cfg.SOLVER.REFERENCE_BATCH_SIZE} per iteration); MAX_ITER {cfg.SOLVER.MAX_ITER} "
                f"= {cfg.SOLVER.MAX_ITER / per_epoch:.2f} epochs, STEPS {tuple(cfg.SOLVER.STEPS)}."
            )
        elif cfg.SOLVER.EPOCHS > 0:
            raise ValueError(
                "SOLVER.EPOCHS needs the number of training images: this build_train_loader "
                "returned a loader without a `num_images` attribute. Set it, or use SOLVER.MAX_ITER."
            )

        # Printed once everything that changes it (batch scaling, epochs) has been applied.
        logger.info("Schedule for the batch in use:\n" + format_table(rows))
        model = self.wrap_model(cfg, model)
        self.precision = Precision(resolve_precision(cfg, cfg.MODEL.DEVICE), cfg.MODEL.DEVICE)
        logger.info(f"Training on {cfg.MODEL.DEVICE} in {self.precision.name}.")
        self._trainer = AccumulatingTrainer(
            model, data_loader, optimizer, cfg.SOLVER.ACCUMULATION_STEPS, self.precision,
            LossExplosionGuard(cfg.SOLVER.LOSS_EXPLOSION_FACTOR),
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = self.build_checkpointer(cfg, model, trainer=weakref.proxy(self))
        if comm.is_main_process() and hasattr(self.checkpointer, "remove_interrupted_writes"):
            self.checkpointer.remove_interrupted_writes()  # a killed run's half-written files
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self._stop_reason = None
        self.register_hooks(self.build_hooks())

    # ---- building blocks (override these) -------------------------------------------------

    @classmethod
    def build_model(cls, cfg):
        """detectron2's model for ``cfg``, with ``MODEL.PLUGIN_ROI_ALIGN``'s ROIAlign kernel."""
        from detectron2.modeling import build_model

        model = build_model(cfg)
        roi_align = use_configured_roi_align(model, cfg)
        logger.info("Model (ROIAlign: %s):\n%s", roi_align, model)
        return model

    @classmethod
    def build_checkpointer(cls, cfg, model, trainer=None):
        """The checkpointer for training and evaluation: the one place to plug another one in.

        It must save ``model`` and ``trainer`` (when given, as a checkpointable) into
        ``cfg.OUTPUT_DIR``, atomically (see :class:`~.atomic_save.AtomicSaveMixin`), and load
        the weight formats ``MODEL.WEIGHTS`` may name.
        """
        extra = {"trainer": trainer} if trainer is not None else {}
        # Class names travel in every checkpoint, so prediction needs no dataset registration.
        extra["metadata"] = ModelMetadata(config_class_names(cfg))
        return AtomicPluginCheckpointer.from_config(cfg, model, cfg.OUTPUT_DIR, **extra)

    @classmethod
    def build_train_loader(cls, cfg):
        """detectron2's training loader with a sampler a resume can move forward.

        The returned loader carries ``resumable_sampler`` and ``num_images`` attributes; an
        override without them trains fine, but cannot restore the data order or use epochs.
        """
        loader, sampler, num_images = build_resumable_train_loader(cfg)
        loader.resumable_sampler = sampler
        loader.num_images = num_images
        return loader

    @staticmethod
    def wrap_model(cfg, model):
        """DistributedDataParallel with several processes: on the process's GPU, or on CPU."""
        if comm.get_world_size() == 1:
            return model
        if cfg.MODEL.DEVICE.startswith("cuda"):
            return create_ddp_model(model, broadcast_buffers=False)
        # detectron2's create_ddp_model passes device_ids=[local rank], which means a GPU.
        return create_ddp_model(model, broadcast_buffers=False, device_ids=None)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """The evaluator that fits the dataset, from ``fpn_plugin.evaluation``."""
        try:
            from fpn_plugin.evaluation import build_evaluator
        except ImportError as e:
            raise ImportError(
                "fpn_plugin.evaluation.build_evaluator is not available, so the trainer cannot "
                f"evaluate {dataset_name!r}: {e}. Set TEST.EVAL_PERIOD 0 and DATASETS.TEST () "
                "to train without evaluation."
            ) from e
        folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, folder)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """detectron2's test loader; an image it cannot read stops evaluation naming the file."""
        return build_test_loader(cfg, dataset_name)

    @classmethod
    def build_val_loss_loader(cls, cfg, dataset_names):
        """Batches of the validation-loss datasets, mapped as for training (with annotations)."""
        return build_detection_test_loader(
            cfg, list(dataset_names), mapper=DatasetMapper(cfg, is_train=True)
        )

    def build_hooks(self):
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.DATALOADER.NUM_WORKERS = 0  # save some memory and time for PreciseBN
        eval_period = cfg.TEST.EVAL_PERIOD
        ret = [
            d2_hooks.IterationTimer(),
            hooks.LRScheduler(),
            d2_hooks.PreciseBN(eval_period, self.model, self.build_train_loader(cfg), cfg.TEST.PRECISE_BN.NUM_ITER)
            if cfg.TEST.PRECISE_BN.ENABLED and get_bn_modules(self.model)
            else None,
        ]
        if comm.is_main_process():
            ret.append(d2_hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))

        def test_and_save_results():
            # Evaluation draws from the global generators (a loader's seed): fenced off so a
            # resumed run replays the same training.
            with preserve_rng_state():
                self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        ret.append(d2_hooks.EvalHook(eval_period, test_and_save_results))
        if cfg.TEST.VAL_LOSS.DATASETS:
            loader = self.build_val_loss_loader(self.cfg, cfg.TEST.VAL_LOSS.DATASETS)
            ret.append(hooks.ValidationLoss(cfg.TEST.VAL_LOSS.PERIOD or eval_period, lambda: loader))
        best = cfg.TEST.BEST_CHECKPOINT
        if best.METRIC and comm.is_main_process():
            if best.MODE not in ("max", "min"):
                raise ValueError(f"TEST.BEST_CHECKPOINT.MODE is {best.MODE!r}; choose 'max' or 'min'.")
            ret.append(hooks.BestCheckpointer(eval_period, self.checkpointer, best.METRIC, best.MODE))
        stop = cfg.TEST.EARLY_STOPPING
        if stop.PATIENCE > 0:
            metric = stop.METRIC or best.METRIC
            if not metric:
                raise ValueError(
                    "TEST.EARLY_STOPPING.PATIENCE is set but no metric is: set "
                    "TEST.EARLY_STOPPING.METRIC (or TEST.BEST_CHECKPOINT.METRIC), e.g. 'bbox/AP50'."
                )
            ret.append(hooks.EarlyStopping(eval_period, metric, stop.PATIENCE, stop.MIN_DELTA, stop.MODE))
        if comm.is_main_process():
            if cfg.TEST.PLOTS.ENABLED and not available("matplotlib"):
                # Plots are a view of metrics.json, not a result: training goes on without them.
                logger.warning("TEST.PLOTS.ENABLED but matplotlib is not installed: no plots/*.png "
                               f"(metrics.json has the numbers). {install_hint('matplotlib')}, or "
                               "set TEST.PLOTS.ENABLED False.")
            elif cfg.TEST.PLOTS.ENABLED:
                ret.append(
                    hooks.PlotCurves(
                        eval_period,
                        os.path.join(cfg.OUTPUT_DIR, "plots"),
                        os.path.join(cfg.OUTPUT_DIR, "metrics.json"),
                    )
                )
            periods = [eval_period, cfg.TEST.VAL_LOSS.PERIOD]
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=20, eval_periods=periods))
        return ret

    # ---- the loop -----------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Ask the loop to stop after the current iteration (e.g. from a hook)."""
        self._stop_reason = reason

    def train(self):
        """Run training; returns the last evaluation results, like ``DefaultTrainer.train``."""
        start_iter, max_iter = self.start_iter, self.max_iter
        logger.info("Starting training from iteration {}".format(start_iter))
        self.iter = self.start_iter
        # TrainerBase.train, plus a way out for early stopping.
        with EventStorage(start_iter) as self.storage:
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                    if self._should_stop():
                        break
                else:
                    self.iter += 1
            except Exception:
                logger.exception("Exception during training:")
                raise
            finally:
                self.after_train()
        if self._stop_reason is not None:
            logger.info(f"Training stopped at iteration {self.iter}: {self._stop_reason}.")
            if comm.is_main_process():
                self.checkpointer.save("model_final", iteration=self.iter)
        if len(self.cfg.TEST.EXPECTED_RESULTS) and comm.is_main_process():
            assert hasattr(self, "_last_eval_results"), "No evaluation results obtained during training!"
            verify_results(self.cfg, self._last_eval_results)
            return self._last_eval_results
        return getattr(self, "_last_eval_results", None)

    def _should_stop(self) -> bool:
        # Every process must leave the loop together; the main process decides.
        if comm.get_world_size() > 1:
            self._stop_reason = comm.all_gather(self._stop_reason)[0]
        return self._stop_reason is not None

    def run_step(self):
        self._trainer.iter = self.iter
        try:
            self._trainer.run_step()
        except NonFiniteLossError as e:
            kept = self.checkpointer.get_checkpoint_file() if self.checkpointer.has_checkpoint() else None
            raise TrainingDivergedError(divergence_message(self.cfg, e, kept)) from None
