"""``vestwatch train``: YOLOv7-family training on our model definitions.

The recipe: SGD (momentum 0.937, nesterov) with three parameter groups (BatchNorm
weights without decay), a nominal batch of 64 by gradient accumulation, warm-up of
bias LR and momentum over the first epochs, cosine LR decay to ``lrf``, EMA of the
weights, AMP on CUDA, a fixed seed. ``weights`` starts from a checkpoint (an official
YOLOv7 ``.pt`` such as the COCO-pretrained one, or ours) instead of from scratch. Every
epoch the EMA model is validated; the run folder gets ``last.safetensors``,
``best.safetensors`` (by 0.1 mAP50 + 0.9 mAP50-95), ``state.pt`` (everything ``--resume``
needs; tensors and numbers only, so it loads with torch's weights-only unpickler) and
``results.csv``.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from stages.detector.backends import TorchBackend, resolve_device
from stages.detector.checkpoints import load_model, save_weights
from stages.detector.detector import Detector, Thresholds
from stages.detector.model import Model
from stages.training.data import DataConfig
from stages.training.dataset import TrainingImages, model_input
from stages.training.loss import YoloLoss
from stages.training.metrics import Evaluation
from stages.training.val import VAL_CONF, VAL_IOU, VAL_MAX_DET, evaluate, report, save_results

log = logging.getLogger(__name__)

NOMINAL_BATCH = 64
RESULT_COLUMNS = [
    "epoch",
    "lr",
    "box_loss",
    "obj_loss",
    "cls_loss",
    "precision",
    "recall",
    "map50",
    "map50_95",
    "seconds",
]


@dataclass
class TrainConfig:
    data: str
    cfg: str = "yolov7-tiny"
    img_size: int = 640
    epochs: int = 100
    batch: int = 16
    device: str = "auto"
    workers: int = 4
    out: str = "runs/train"
    seed: int = 0
    data_root: str | None = None
    lr0: float = 0.01
    lrf: float = 0.01
    momentum: float = 0.937
    weight_decay: float = 0.0005
    warmup_epochs: float = 3.0
    weights: str | None = None  # initial weights; None trains from scratch
    cache: bool = False  # decode the training images once into RAM (3.2 GB for 2605 at 640)
    time_minutes: float | None = None  # size the epochs from the first one so the run ends within this
    max_train_images: int | None = None  # for smoke tests
    max_val_images: int | None = None


class ModelEMA:
    """Exponential moving average of the weights, with the decay ramped up over the first updates."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000, updates: int = 0) -> None:
        self.ema = copy.deepcopy(model).eval()
        self.decay, self.tau, self.updates = decay, tau, updates
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        source = model.state_dict()
        for name, value in self.ema.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[name].detach(), alpha=1 - d)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _worker_init(worker: int) -> None:
    """Seed a loader worker; keep OpenCV single-threaded there, since N workers each spawning a
    thread per core oversubscribe the CPU (the official loaders do the same)."""
    cv2.setNumThreads(0)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def epochs_within(budget_s: float, elapsed_s: float, epoch_s: float, done: int) -> int:
    """How many epochs in all fit ``budget_s`` when ``done`` took ``elapsed_s`` (start-up included)
    and each further one takes ``epoch_s``; at least the ones done.

    >>> epochs_within(600, 70, 50, 1)  # 530 s left: 10 more epochs of 50 s
    11
    """
    return done + max(0, int((budget_s - elapsed_s) // epoch_s))


def build_optimizer(model: nn.Module, config: TrainConfig, accumulate: int) -> torch.optim.Optimizer:
    """Three groups as the official recipe: BN weights (no decay), other weights (decay), biases."""
    bn_weights, weights, biases = [], [], []
    for module in model.modules():
        if hasattr(module, "bias") and isinstance(module.bias, nn.Parameter):
            biases.append(module.bias)
        if isinstance(module, nn.BatchNorm2d):
            bn_weights.append(module.weight)
        elif hasattr(module, "weight") and isinstance(module.weight, nn.Parameter):
            weights.append(module.weight)
        if hasattr(module, "implicit") and isinstance(module.implicit, nn.Parameter):
            bn_weights.append(module.implicit)
    decay = config.weight_decay * config.batch * accumulate / NOMINAL_BATCH
    optimizer = torch.optim.SGD(bn_weights, lr=config.lr0, momentum=config.momentum, nesterov=True)
    optimizer.add_param_group({"params": weights, "weight_decay": decay})
    optimizer.add_param_group({"params": biases})
    return optimizer


def cosine(epoch: int, epochs: int, lrf: float) -> float:
    """The LR factor, from 1 down to ``lrf`` along half a cosine."""
    return ((1 - math.cos(epoch * math.pi / epochs)) / 2) * (lrf - 1) + 1


def transfer_weights(model: Model, source: Model) -> tuple[int, int]:
    """Copy every tensor of ``source`` whose name and shape match into ``model``, as the official
    recipe does: the backbone and neck carry over, output convs of another class count and the
    anchors (``model``'s cfg decides them) do not. Returns (copied, total) tensor counts."""
    own = model.state_dict()
    matching = {
        name: tensor
        for name, tensor in source.float().state_dict().items()
        if name in own and tensor.shape == own[name].shape and "anchor" not in name
    }
    model.load_state_dict(matching, strict=False)
    return len(matching), len(own)


class Training:
    """A run's moving parts: the model, its EMA, the optimiser with its LR schedule and gradient
    scaler, and where the run stands; made in the recipe's order, as the seed's results depend on it."""

    def __init__(self, config: TrainConfig, model: Model, device: torch.device) -> None:
        self.config, self.model, self.device = config, model, device
        self.cuda = device.type == "cuda"
        self.accumulate = max(round(NOMINAL_BATCH / config.batch), 1)  # batches per optimiser step
        self.optimizer = build_optimizer(model, config, self.accumulate)
        # reads config.epochs when it steps: --time may re-size the run after its first epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda e: cosine(e, config.epochs, config.lrf)
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.cuda)
        self.ema = ModelEMA(model)
        self.start_epoch, self.best_fitness = 0, -1.0

    def restore(self, state: dict) -> None:
        """Where ``state.pt`` left the run: the next epoch is the one after the saved one."""
        self.model.load_state_dict(state["model"])
        self.ema.ema.load_state_dict(state["ema"])
        self.ema.updates = state["ema_updates"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch, self.best_fitness = state["epoch"] + 1, state["best_fitness"]
        self.scheduler.last_epoch = self.start_epoch - 1

    def train_epoch(
        self, epoch: int, loader: torch.utils.data.DataLoader, criterion: YoloLoss, warmup: int
    ) -> torch.Tensor:
        """One pass over ``loader``; the mean box, objectness and class losses. Over the first
        ``warmup`` batches of the run, the accumulation, LRs and momentum ramp up to the recipe's."""
        config, optimizer = self.config, self.optimizer
        batches = len(loader)
        self.model.train()
        losses = torch.zeros(3, device=self.device)
        optimizer.zero_grad()
        for i, (images, targets) in enumerate(loader):
            step = i + batches * epoch
            images = model_input(images, self.device, loader.dataset.hyp)
            if step <= warmup:
                self.accumulate = max(1, round(np.interp(step, [0, warmup], [1, NOMINAL_BATCH / config.batch])))
                for g, group in enumerate(optimizer.param_groups):
                    target = group["initial_lr"] * cosine(epoch, config.epochs, config.lrf)
                    # plain floats: state.pt must load with the weights-only unpickler
                    group["lr"] = float(np.interp(step, [0, warmup], [0.1 if g == 2 else 0.0, target]))
                    group["momentum"] = float(np.interp(step, [0, warmup], [0.8, config.momentum]))
            with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.cuda):
                loss, parts = criterion(self.model(images), targets.to(self.device))
            self.scaler.scale(loss).backward()
            if (step + 1) % self.accumulate == 0 or i == batches - 1:
                self.scaler.step(optimizer)
                self.scaler.update()
                optimizer.zero_grad()
                self.ema.update(self.model)
            losses = (losses * i + parts) / (i + 1)
        return losses

    def save(self, epoch: int, fitness: float, out: Path) -> None:
        """The EMA weights as ``last`` (and ``best``, if they are), and everything ``--resume`` needs."""
        save_weights(self.ema.ema, out / "last.safetensors")
        if fitness > self.best_fitness:
            self.best_fitness = fitness
            save_weights(self.ema.ema, out / "best.safetensors")
        torch.save(
            {
                "config": asdict(self.config),
                "epoch": epoch,
                "best_fitness": self.best_fitness,
                "model": self.model.state_dict(),
                "ema": self.ema.ema.state_dict(),
                "ema_updates": self.ema.updates,
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
            },
            out / "state.pt",
        )


def train(config: TrainConfig, resume: Path | None = None) -> Path:
    """Train; returns the run folder."""
    state = torch.load(resume, map_location="cpu", weights_only=True) if resume else None
    started = time.time()
    if state:
        epochs = max(state["config"]["epochs"], config.epochs)
        config = TrainConfig(**{**state["config"], "epochs": epochs, "time_minutes": config.time_minutes})
    seed_everything(config.seed)
    out = Path(resume.parent if resume else config.out)
    out.mkdir(parents=True, exist_ok=True)
    data = DataConfig.load(config.data, config.data_root)
    train_images, train_labels = data.split("train")
    val_images, val_labels = data.split("val")
    train_images, train_labels = train_images[: config.max_train_images], train_labels[: config.max_train_images]
    val_images, val_labels = val_images[: config.max_val_images], val_labels[: config.max_val_images]

    device = resolve_device(config.device)
    training = Training(config, initial_model(config, data.names, fresh=not state).to(device), device)
    if state:
        training.restore(state)
        log.info("resuming %s at epoch %d", out, training.start_epoch)
    else:
        (out / "config.json").write_text(json.dumps(asdict(config), indent=1))
    loader = training_loader(config, train_images, train_labels, pin_memory=training.cuda)
    criterion = YoloLoss(training.model, config.img_size)
    batches = len(loader)
    warmup = max(round(config.warmup_epochs * batches), min(100, batches * config.epochs // 2))
    log.info(
        "training %s on %d images (%d val) for %d epochs on %s; batch %d x %d accumulation",
        config.cfg,
        len(train_images),
        len(val_images),
        config.epochs,
        device,
        config.batch,
        training.accumulate,
    )
    epoch = training.start_epoch
    while epoch < config.epochs:
        epoch_started = time.time()
        losses = training.train_epoch(epoch, loader, criterion, warmup)
        summary = validate(training.ema.ema, device, val_images, val_labels, data.names, config.img_size)[1]
        if config.time_minutes and epoch == training.start_epoch:
            took = time.time() - epoch_started
            config.epochs = epochs_within(config.time_minutes * 60, time.time() - started, took, epoch + 1)
            log.info("--time %g min: %d epochs in all (%.0f s each)", config.time_minutes, config.epochs, took)
        # after any re-sizing: the cosine reads config.epochs, so the run ends on its schedule
        training.scheduler.step()
        training.save(epoch, 0.1 * summary["map50"] + 0.9 * summary["map50_95"], out)
        lr = training.optimizer.param_groups[0]["lr"]
        record_epoch(out, epoch, config.epochs, lr, losses.tolist(), summary, time.time() - epoch_started)
        epoch += 1
    best = load_model(out / "best.safetensors").to(device)
    evaluation, summary = validate(best, device, val_images, val_labels, data.names, config.img_size)
    save_results(evaluation, summary, out / "val")
    print(report(summary))
    return out


def initial_model(config: TrainConfig, names: list[str], fresh: bool) -> Model:
    """The cfg's model; a fresh run (not resumed) starts from ``config.weights`` where given."""
    model = Model(config.cfg, nc=len(names), names=names)
    if config.weights and fresh:
        copied, total = transfer_weights(model, load_model(config.weights))
        if copied < total // 2:
            raise ValueError(f"{config.weights}: only {copied} of {total} tensors fit cfg {config.cfg}: another model?")
        log.info("initialised from %s: %d of %d tensors", config.weights, copied, total)
    return model


def training_loader(
    config: TrainConfig, images: list[Path], labels: list[np.ndarray], pin_memory: bool
) -> torch.utils.data.DataLoader:
    """Augmented, shuffled batches in an order the seed decides."""
    return torch.utils.data.DataLoader(
        TrainingImages(images, labels, config.img_size, augment=True, cache=config.cache),
        batch_size=config.batch,
        shuffle=True,
        num_workers=config.workers,
        collate_fn=TrainingImages.collate,
        pin_memory=pin_memory,
        drop_last=len(images) > config.batch,
        generator=torch.Generator().manual_seed(config.seed),
        worker_init_fn=_worker_init,
        persistent_workers=config.workers > 0,
    )


def record_epoch(
    out: Path, epoch: int, epochs: int, lr: float, losses: list[float], summary: dict, seconds: float
) -> None:
    """The epoch's row in ``results.csv``, and its line in the log."""
    row = [epoch, lr, *losses, summary["precision"], summary["recall"], summary["map50"], summary["map50_95"], seconds]
    _append_result(out / "results.csv", row)
    log.info(
        "epoch %d/%d: loss box %.4f obj %.4f cls %.4f; val mAP50 %.3f mAP50-95 %.3f (%.0f s)",
        epoch + 1,
        epochs,
        *losses,
        summary["map50"],
        summary["map50_95"],
        seconds,
    )


def validate(
    model: Model, device: torch.device, images: list[Path], labels: list[np.ndarray], names: list[str], img_size: int
) -> tuple[Evaluation, dict]:
    """Evaluate a copy of ``model`` through the same Detector path ``vestwatch val`` uses."""
    backend = TorchBackend(copy.deepcopy(model).float(), device)
    detector = Detector(backend, img_size, Thresholds(VAL_CONF, VAL_IOU, max_det=VAL_MAX_DET))
    evaluation = evaluate(detector, images, labels, names)
    return evaluation, evaluation.summary()


def _append_result(path: Path, row: list) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(RESULT_COLUMNS)
        writer.writerow([f"{v:.5g}" if isinstance(v, float) else v for v in row])
