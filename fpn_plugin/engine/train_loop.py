"""One training step: gradient accumulation, mixed precision and a check for divergence."""
import collections
import contextlib
import math
import statistics
import time

import torch
import torch.distributed as dist
from detectron2.engine import SimpleTrainer
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel

from .precision import Precision
from .rng import preserve_rng_state

__all__ = ["AccumulatingTrainer", "LossExplosionGuard", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """A loss term or a gradient is NaN or infinite.

    Attributes:
        detail (str): what detected it, when not the loss check itself.
        iteration (int): the iteration that produced it.
        lr (float): the learning rate of that iteration.
        loss_terms (dict[str, float]): the loss terms (averaged over the micro-batches so far).
        where (str): "loss" or "gradients".
        exploded (bool): the loss is finite but far above its recent level (see
            :class:`LossExplosionGuard`), a divergence on its way to NaN.
    """

    def __init__(self, iteration: int, lr: float, loss_terms: dict, where: str, detail: str = "",
                 exploded: bool = False):
        self.iteration, self.lr, self.loss_terms, self.where = iteration, lr, loss_terms, where
        self.detail, self.exploded = detail, exploded
        terms = ", ".join(f"{k}={v:.4g}" for k, v in loss_terms.items())
        super().__init__(f"non-finite {where} at iteration {iteration} (lr {lr:.4g}): {terms} {detail}")


class LossExplosionGuard:
    """Tells a finite loss that has exploded: ``factor`` times its median of recent iterations.

    A run whose loss went from 2.5 to 2.5e8 in 20 iterations trains on to a model with no
    detections if only NaN/inf stop it. The median of the last ``window`` iterations is the
    level; it is judged once ``min_history`` of them are known (the first iterations of a run
    from scratch move a lot). ``factor`` 0 turns it off.
    """

    def __init__(self, factor: float, window: int = 20, min_history: int = 10):
        if factor < 0 or 0 < factor <= 1:
            raise ValueError(
                f"SOLVER.LOSS_EXPLOSION_FACTOR is {factor}: it must be > 1 (how many times its "
                "recent median the loss may reach), or 0 to turn the check off."
            )
        self.factor, self.min_history = factor, min_history
        self.history = collections.deque(maxlen=window)

    def check(self, loss: float) -> str:
        """Record ``loss``; return why it exploded ("" when it has not)."""
        if self.factor and len(self.history) >= self.min_history:
            level = statistics.median(self.history)
            if level > 0 and loss > self.factor * level:
                return (f"the total loss {loss:.4g} is {loss / level:.3g}x its median {level:.4g} "
                        f"over the last {len(self.history)} iterations (SOLVER.LOSS_EXPLOSION_FACTOR "
                        f"{self.factor:g})")
        self.history.append(loss)
        return ""


def _all_ranks_agree(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is True on every process (a no-op with one process).

    All processes must decide together to stop: a process that stops alone leaves the others
    waiting forever in the gradient all-reduce.
    """
    if comm.get_world_size() == 1:
        return flag
    t = torch.tensor([0.0 if flag else 1.0], device=device)
    dist.all_reduce(t)
    return t.item() == 0.0


class AccumulatingTrainer(SimpleTrainer):
    """detectron2's ``SimpleTrainer`` with accumulation, precision and a divergence check.

    One iteration (one optimizer step, one LR-scheduler step) runs ``accumulation_steps``
    forward/backward passes over consecutive batches and sums their gradients, each loss
    divided by ``accumulation_steps``: with losses that are means over the images of a batch,
    ``k`` passes of ``b`` images give the gradients of one pass of ``k*b`` images.

    Before each backward pass, and on the summed gradients before the optimizer step, the
    values are checked; a NaN or inf raises :class:`NonFiniteLossError` before the weights
    change, so the model and the checkpoints keep the last finite weights.

    Args:
        model, data_loader, optimizer: as for ``SimpleTrainer``.
        accumulation_steps (int): forward/backward passes per optimizer step.
        precision (Precision): autocast and loss scaling; fp32 when None.
        explosion_guard (LossExplosionGuard): stops on a finite loss that has exploded; off
            when None.
    """

    def __init__(self, model, data_loader, optimizer, accumulation_steps=1, precision=None,
                 explosion_guard=None):
        # SimpleTrainer.__init__ sets what SimpleTrainer's methods read, and that differs by
        # version: detectron2 0.6 sets model, data_loader, optimizer and the data iterator;
        # git main also gather_metric_period, zero_grad_before_forward, async_write_metrics
        # (read by _write_metrics) and concurrent_executor (shut down by after_train). So it
        # is called, with the three arguments both take. It gets no data: 0.6 starts the
        # loader's iterator at once (workers and all, and a seed drawn from torch's global
        # generator), which a resume would have to throw away to restart the data order. The
        # real loader's iterator starts at the first step (``_data_loader_iter``).
        super().__init__(model, (), optimizer)
        self.data_loader = data_loader
        self._data_iter = None
        self.accumulation_steps = int(accumulation_steps)
        self.precision = precision or Precision("fp32", "cpu")
        self.explosion_guard = explosion_guard

    @property
    def _data_loader_iter(self):
        if self._data_iter is None:
            # Creating a loader's iterator draws a seed from torch's global generator;
            # fenced off so that a resumed run draws the same training random numbers.
            with preserve_rng_state():
                self._data_iter = iter(self.data_loader)
        return self._data_iter

    @_data_loader_iter.setter
    def _data_loader_iter(self, iterator):
        # detectron2 0.6's SimpleTrainer.__init__ assigns it (git main uses a lazy property).
        self._data_iter = iterator

    def reset_data_loader(self, data_loader_builder=None) -> None:
        """Start the data loader anew at the next step (after its sampler was moved).

        Args:
            data_loader_builder: as for git main's ``SimpleTrainer.reset_data_loader``: when
                given, a callable whose result replaces the data loader.
        """
        if data_loader_builder is not None:
            self.data_loader = data_loader_builder()
        self._data_iter = None

    def _lr(self) -> float:
        return max(g["lr"] for g in self.optimizer.param_groups)

    def run_step(self):
        assert self.model.training, "[AccumulatingTrainer] model was changed to eval mode!"
        k = self.accumulation_steps
        data_time = 0.0
        totals = {}
        self.optimizer.zero_grad()
        for i in range(k):
            start = time.perf_counter()
            data = next(self._data_loader_iter)
            data_time += time.perf_counter() - start
            # DDP all-reduces the gradients on every backward; only the last pass needs it.
            last = i == k - 1
            sync = (
                self.model.no_sync()
                if not last and isinstance(self.model, DistributedDataParallel)
                else contextlib.nullcontext()
            )
            with sync:
                with self.precision.autocast():
                    try:
                        loss_dict = self.model(data)
                    except FloatingPointError as e:
                        # detectron2's own checks (e.g. "Predicted boxes or scores contain
                        # Inf/NaN") see divergence first when the weights already are NaN.
                        raise NonFiniteLossError(
                            self.iter, self._lr(), {n: v.item() * k / max(i, 1) for n, v in totals.items()},
                            "model outputs", detail=str(e),
                        ) from e
                    if isinstance(loss_dict, torch.Tensor):
                        loss_dict = {"total_loss": loss_dict}
                    losses = sum(loss_dict.values())
                for name, value in loss_dict.items():
                    totals[name] = totals.get(name, 0.0) + value.detach().float() / k
                finite = bool(torch.isfinite(losses.detach()).all())
                if not _all_ranks_agree(finite, losses.device):
                    raise NonFiniteLossError(
                        self.iter, self._lr(), {n: v.item() * k / (i + 1) for n, v in totals.items()}, "loss"
                    )
                self.precision.backward(losses / k)

        if self.explosion_guard is not None:
            # Before the optimizer step: the weights keep what gave the last sane loss.
            why = self.explosion_guard.check(float(sum(totals.values())))
            if not _all_ranks_agree(not why, next(iter(totals.values())).device):
                raise NonFiniteLossError(
                    self.iter, self._lr(), {n: v.item() for n, v in totals.items()}, "loss",
                    detail=why or "on another process", exploded=True,
                )

        # The hook stage git main's SimpleTrainer.run_step has (detectron2 0.6 has none).
        after_backward = getattr(self, "after_backward", None)
        if after_backward is not None:
            after_backward()
        self._write_metrics(totals, data_time)

        # With fp16 the grad scaler skips steps with inf gradients (that is how it finds its
        # scale); a diverging fp16 run shows up as a non-finite loss instead.
        if self.precision.grad_scaler is None:
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            if grads and not math.isfinite(float(torch.nn.utils.get_total_norm(grads))):
                raise NonFiniteLossError(
                    self.iter, self._lr(), {n: v.item() for n, v in totals.items()}, "gradients"
                )
        self.precision.step(self.optimizer)

    def state_dict(self):
        ret = super().state_dict()
        ret.update(self.precision.state_dict())
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.precision.load_state_dict(state_dict)
