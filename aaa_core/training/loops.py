"""Training loops: natural and Madry-adversarial classifiers, and the AAA autoencoder (one or many classifiers).

Loops write no outputs of their own: they return a history and, after every epoch, hand a resumable state
to ``save_state`` (the stage decides where it goes). A state given back through ``resume`` continues the
run exactly where it stopped: weights, optimizer, learning-rate schedule, history, the loop's own generator
and the global random states (torch CPU and CUDA, numpy, Python) that layers such as Dropout draw from.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from aaa_core import distributed
from aaa_core.attacks import pgd
from aaa_core.models.compose import Defended, freeze
from aaa_core.progress import progress
from aaa_core.runtime import generator as make_generator
from aaa_core.runtime import rng_state, set_rng_state
from aaa_core.training.losses import AELoss

# attack(model, x, y, generator, strength): strength in (0, 1] scales eps and step (1 = the full attack)
Attack = Callable[[nn.Module, Tensor, Tensor, torch.Generator, float], Tensor]
StepFn = Callable[[Tensor, Tensor, torch.Generator, int], Tensor]   # (x, y, generator, iteration) -> loss


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    lr_patience: int
    seed: int
    epoch_images: int = 0    # images drawn (without replacement) per epoch; 0 = the whole training set
    bf16: bool = False       # bfloat16 autocast for the training attack (if any) and step; evaluation stays float32
    eps_ramp: int = 0        # adversarial training (Madry, AE): eps grows linearly over this many iterations (0 = none)
    augment: bool = False    # random crop (zero padding 4) and horizontal flip of every training batch


def augment_batch(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Random crop of the zero-padded image and random horizontal flip, per example (CIFAR-10 training)."""
    n, _, h, w = x.shape
    device = x.device
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    rows = (dy[:, None] + torch.arange(h, device=device))[:, None, :, None].expand(n, x.shape[1], h, w + 2 * pad)
    cropped = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w, device=device))[:, None, None, :].expand(n, x.shape[1], h, w)
    cropped = cropped.gather(3, cols)
    flip = torch.rand(n, generator=generator, device=device) < 0.5
    return torch.where(flip[:, None, None, None], cropped.flip(3), cropped)


def fit(model: nn.Module, step: StepFn, val_loss: Callable[[torch.Generator], float],
        x: Tensor, y: Tensor, cfg: TrainConfig, *, resume: dict | None = None,
        save_state: Callable[[dict], None] | None = None,
        log: Callable[[str], None] = print) -> list[dict]:
    """Adam over ``model``'s trainable parameters, halving the learning rate when the val loss stalls.

    ``step(xb, yb, generator, iteration)`` returns the batch loss (it sets the modes it needs); ``val_loss`` is
    evaluated once per epoch. Returns one record per epoch: epoch, loss, val_loss, lr, seconds.

    Runs where ``x`` lives: the loop's generator and every index it draws are on that device, and bfloat16
    autocast (``cfg.bf16``) is that device's.

    Under DDP (``aaa_core.distributed``; ``step`` must then run its trainable forward through
    ``distributed.wrap``) every rank draws the same permutation and trains on its share of each global batch
    of ``cfg.batch_size``; its own generator (seed + 1 + rank) draws its attacks' noise. The epoch's loss and
    ``val_loss`` (each rank's, on its share) are averaged over ranks, so the schedule steps alike everywhere;
    only rank 0 calls ``save_state``, with every rank's generator and random states in it.
    """
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=cfg.lr_patience)
    device, rank, world = x.device, distributed.rank(), distributed.world_size()
    if rank != 0:
        log = lambda _: None   # noqa: E731 (one voice: rank 0 speaks for all)
    shared = make_generator(cfg.seed, device)     # the permutation: the same on every rank
    generator = shared if world == 1 else make_generator(cfg.seed + 1 + rank, device)
    history: list[dict] = []
    if resume is not None:
        if resume.get("world_size", 1) != world:
            raise ValueError(f"the resume state was saved by {resume.get('world_size', 1)} processes, not {world}")
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        mine = resume["ranks"][rank]
        shared.set_state(resume["shared"])
        generator.set_state(mine["generator"])
        set_rng_state(mine["rng"])
        history = list(resume["history"])
        log(f"resuming after epoch {len(history)} of {cfg.epochs}")
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(len(x), generator=shared, device=device)[:cfg.epoch_images or None]
        total, seen = 0.0, 0
        batches = order.split(cfg.batch_size)
        for index, batch in enumerate(progress(batches, f"epoch {epoch}/{cfg.epochs}")):
            batch = distributed.shard(batch)
            xb = augment_batch(x[batch], generator) if cfg.augment else x[batch]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = step(xb, y[batch], generator, (epoch - 1) * len(batches) + index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            seen += len(batch)
        val = distributed.mean(val_loss(generator))
        scheduler.step(val)
        record = {"epoch": epoch, "loss": distributed.mean(total / seen), "val_loss": val,
                  "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - start}
        history.append(record)
        log(f"epoch {epoch}/{cfg.epochs}: loss {record['loss']:.4f}  val_loss {val:.4f}  "
            f"lr {record['lr']:.2e}  {record['seconds']:.0f}s")
        if save_state is not None:
            ranks = distributed.gather({"generator": generator.get_state(), "rng": rng_state()})
            if rank == 0:
                save_state({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "shared": shared.get_state(), "ranks": ranks,
                            "world_size": world, "history": history})
    return history


def training_attack(cfg) -> Attack:
    """PGD as the training attack (``cfg``: a ``PGDConfig``), eps and step scaled by the ramp's strength."""
    def attack(model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator, strength: float) -> Tensor:
        return pgd(model, x, y, eps=strength * cfg.eps, alpha=strength * cfg.alpha, steps=cfg.steps,
                   generator=generator)
    return attack


def noise_attack(sigmas: Sequence[float]) -> Attack:
    """Gaussian noise in place of the training attack: the denoised-smoothing reference (Salman et al., 2020),
    an AE trained to undo the noise randomized smoothing adds. Each batch gets ``x + sigma * N(0, 1)``, ``sigma``
    drawn per batch from ``sigmas`` (pixel units), unclipped as smoothing samples it; the ramp's strength is
    ignored. In: (N, ...) images in [0, 1]; out: the same shape."""
    sigmas = [float(s) for s in sigmas]

    def attack(model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator, strength: float) -> Tensor:
        pick = int(torch.randint(len(sigmas), (1,), generator=generator, device=generator.device).item())
        return x + sigmas[pick] * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return attack


def ramp_strength(iteration: int, eps_ramp: int) -> float:
    """The training attack's strength at ``iteration`` (0-based): linear from 1/eps_ramp to 1, then 1.

    One schedule for Madry training and the AE alike, so neither starts against a stronger adversary.
    """
    return min(1.0, (iteration + 1) / eps_ramp) if eps_ramp else 1.0


def _batched_mean(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor, batch_size: int) -> float:
    total = 0.0
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        total += fn(xb, yb).item() * len(xb)
    return total / len(x)


def train_classifier(model: nn.Module, x: Tensor, y: Tensor, x_val: Tensor, y_val: Tensor, cfg: TrainConfig,
                     *, attack: Attack | None = None, **fit_kwargs) -> list[dict]:
    """Natural training (``attack=None``) or Madry adversarial training: every batch replaced by its PGD
    adversarial examples, crafted with the model in eval mode.

    With ``cfg.eps_ramp`` the attack's eps grows linearly over the first iterations: trained from scratch
    against the full eps 0.3 on MNIST, the network can stay at chance (measured here: loss 2.30 after 200
    batches without the ramp, 1.16 with a 100-iteration ramp).
    """
    criterion = nn.CrossEntropyLoss()
    net = distributed.wrap(model)                     # the training forward (DDP under torchrun)
    x_val, y_val = distributed.shard_rows(x_val, y_val)

    def adversarial(xb: Tensor, yb: Tensor, generator: torch.Generator, strength: float = 1.0) -> Tensor:
        if attack is None:
            return xb
        model.eval()
        return attack(model, xb, yb, generator, strength)

    def step(xb: Tensor, yb: Tensor, generator: torch.Generator, iteration: int) -> Tensor:
        xb = adversarial(xb, yb, generator, ramp_strength(iteration, cfg.eps_ramp))
        model.train()
        return criterion(net(xb), yb)

    def val_loss(generator: torch.Generator) -> float:
        def batch_loss(xb: Tensor, yb: Tensor) -> Tensor:
            xb = adversarial(xb, yb, generator)
            with torch.no_grad():
                return criterion(model.eval()(xb), yb)
        return _batched_mean(batch_loss, x_val, y_val, cfg.batch_size)

    return fit(model, step, val_loss, x, y, cfg, **fit_kwargs)


def train_ae(ae: nn.Module, classifiers: Sequence[nn.Module], loss_fn: AELoss, x: Tensor, y: Tensor,
             x_val: Tensor, y_val: Tensor, cfg: TrainConfig, *, attack: Attack, **fit_kwargs) -> list[dict]:
    """AAA: train ``ae`` so that frozen classifiers survive PGD through AE and classifier together.

    At every iteration one classifier is drawn at random (an ensemble of one is the single-classifier
    case); the batch is attacked through ``Defended(ae, classifier)`` with the AE in eval mode (eps ramped
    over ``cfg.eps_ramp`` iterations, as in Madry training), then the
    AE trains on the adversarial batch with ``loss_fn(logits, y, reconstruction, clean x)``.
    Classifiers are frozen: their weights and BatchNorm statistics never change.
    """
    pipelines = [Defended(ae, freeze(c)) for c in classifiers]
    net = distributed.wrap(ae)                        # the training forward (DDP under torchrun)
    x_val, y_val = distributed.shard_rows(x_val, y_val)

    def draw(generator: torch.Generator) -> Defended:
        return pipelines[int(torch.randint(len(pipelines), (1,), generator=generator, device=generator.device))]

    def step(xb: Tensor, yb: Tensor, generator: torch.Generator, iteration: int) -> Tensor:
        pipeline = draw(generator)
        pipeline.eval()
        x_adv = attack(pipeline, xb, yb, generator, ramp_strength(iteration, cfg.eps_ramp))
        pipeline.train()
        recon = net(x_adv)
        return loss_fn(pipeline.classifier(recon).float(), yb, recon.float(), xb)

    def val_loss(generator: torch.Generator) -> float:
        def one(xb: Tensor, yb: Tensor) -> Tensor:
            losses = []
            for pipeline in pipelines:
                pipeline.eval()
                x_adv = attack(pipeline, xb, yb, generator, 1.0)
                with torch.no_grad():
                    recon = ae(x_adv)
                    losses.append(loss_fn(pipeline.classifier(recon), yb, recon, xb))
            return torch.stack(losses).mean()
        result = _batched_mean(one, x_val, y_val, cfg.batch_size)
        ae.eval()
        return result

    return fit(ae, step, val_loss, x, y, cfg, **fit_kwargs)


def pretrain_ae(ae: nn.Module, x: Tensor, x_val: Tensor, cfg: TrainConfig, **fit_kwargs) -> list[dict]:
    """Warm start: ``cfg.epochs`` epochs of clean reconstruction (MSE to the input), no attack, no classifier.

    What ZO-AE-DS does before its zeroth-order phase: an AE that already reconstructs hands the classifier
    in-distribution images from the first adversarial iteration, instead of noise it answers at chance.
    """
    def step(xb: Tensor, yb: Tensor, generator: torch.Generator, iteration: int) -> Tensor:
        ae.train()
        return nn.functional.mse_loss(ae(xb).float(), xb)

    def val_loss(generator: torch.Generator) -> float:
        def one(xb: Tensor, yb: Tensor) -> Tensor:
            with torch.no_grad():
                return nn.functional.mse_loss(ae.eval()(xb), xb)
        unused = torch.zeros(len(x_val), dtype=torch.long, device=x_val.device)
        return _batched_mean(one, x_val, unused, cfg.batch_size)

    labels = torch.zeros(len(x), dtype=torch.long, device=x.device)   # unused: reconstruction needs none
    return fit(ae, step, val_loss, x, labels, cfg, **fit_kwargs)
