"""Gradient accumulation: k passes of b images give the gradients of one pass of k*b images."""
import pytest
import torch
from torch import nn

import fpn_plugin  # noqa: F401
from detectron2.utils.events import EventStorage

from fpn_plugin.engine import AccumulatingTrainer


class PerImageMeanLoss(nn.Module):
    """A small conv net whose loss is the mean over the batch of a per-image loss (like
    detectron2's detection losses up to their sampling)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))

    def forward(self, batch):
        per_image = [self.net(d["image"][None]).pow(2).mean() + d["target"] * self.net[0].bias.sum() for d in batch]
        return {"loss_a": torch.stack(per_image).mean(), "loss_b": 0.1 * torch.stack(per_image).sum() / len(batch)}


def _step(batches, k):
    model = PerImageMeanLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = AccumulatingTrainer(model, batches, optimizer, accumulation_steps=k)
    with EventStorage(0) as storage:
        trainer.iter = 0
        trainer.run_step()
        losses = {k: storage.history(k).latest() for k in ("loss_a", "loss_b", "total_loss")}
    grads = [p.grad.clone() for p in model.parameters()]
    return grads, [p.detach().clone() for p in model.parameters()], losses


@pytest.mark.parametrize("k, b", [(2, 1), (3, 2), (4, 1)])
def test_k_passes_of_b_images_equal_one_pass_of_k_times_b(k, b):
    g = torch.Generator().manual_seed(k * 10 + b)
    images = [{"image": torch.randn(3, 12, 16, generator=g), "target": float(i)} for i in range(k * b)]
    small = [images[i * b : (i + 1) * b] for i in range(k)]
    grads_k, weights_k, losses_k = _step(small, k)
    grads_1, weights_1, losses_1 = _step([images], 1)
    for a, c in zip(grads_k, grads_1):
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-7)
    for a, c in zip(weights_k, weights_1):
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-7)
    assert losses_k == pytest.approx(losses_1, rel=1e-5)
    assert any(g.abs().sum() > 0 for g in grads_k)


def test_accumulation_consumes_k_batches_per_step():
    batches = [[{"image": torch.randn(3, 8, 8), "target": 0.0}] for _ in range(6)]
    model = PerImageMeanLoss()
    trainer = AccumulatingTrainer(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), 3)
    with EventStorage(0):
        trainer.run_step()
        trainer.run_step()
        with pytest.raises(StopIteration):
            trainer.run_step()
