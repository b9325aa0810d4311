"""`python -m train fit`: train the AU-guided classifier (or the vanilla baseline with --lam 0).

Checkpoints go to a run folder outside the repository (the user cache by default): `last.pt` after
every epoch (model, optimiser, schedule, RNG: enough to resume exactly) and `best.pt` (weights and
config only) whenever validation accuracy improves. Rerunning the same command resumes."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from stream_fer.train.au_targets import split_maps
from stream_fer.train.augment import AugmentConfig, augment_batch
from stream_fer.train.checkpoint import cpu_state, load_model, read_checkpoint, save_checkpoint
from stream_fer.train.data import class_counts, load_ferplus
from stream_fer.train.landmarks import load_cache
from stream_fer.train.levers import distillation_loss, ensemble_logits, kl_to, make_ema, mixup, nnldl_targets
from stream_fer.train.loss import au_guided_loss
from stream_fer.train.model import ModelConfig, build_model, count_macs, normalise
from stream_fer.train.paths import train_cache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 30
    batch_size: int = 64
    lam: float = 4.0
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.05
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | step
    warmup_epochs: float = 1.0
    soft_targets: bool = True
    # The vote distributions raised to this power and renormalised: > 1 sharpens them towards the majority
    # label, which is what accuracy counts (1: FER+'s own distributions; with soft_targets only).
    target_power: float = 1.0
    class_weight_power: float = 0.5  # weights ~ (count / mean) ** -power; 0 = unweighted
    label_smoothing: float = 0.0
    seed: int = 0
    limit: int = 0  # use only the first N training samples (tests, smoke runs)
    val_limit: int = 0
    # A second stage: start from this checkpoint's weights with a fresh optimiser and schedule (a warm
    # restart); its model config must equal this run's. Empty: start from random weights.
    init_from: str = ""
    # The recipe's optional levers (train/levers.py); 0 / "" = off.
    ema_decay: float = 0.0  # EMA of the weights; when on, the EMA weights are validated, kept and exported
    mixup: float = 0.0  # Beta(alpha, alpha) mixup of image and AU map
    nnldl_k: int = 0  # nearest-neighbour label distributions (RALD): k neighbours in the batch
    nnldl_weight: float = 1.0
    distill_from: str = ""  # teacher checkpoint; several, comma-separated: their averaged probabilities
    distill_weight: float = 1.0
    distill_temperature: float = 2.0
    # The teacher's predictions computed once per training face (un-augmented) instead of on every augmented
    # batch: one teacher pass per face per run instead of one per step (a flip teacher's two passes per step
    # are about 40% of a step's CPU). Augmentation barely moves a face's expression distribution.
    distill_cached: bool = False
    # What the network is trained and validated on: "raw" FER+ images, or "aligned": each face as the product's
    # aligned crop with its AU map from the crop's landmarks (train/aligned.py).
    inputs: str = "raw"


def stored_settings(stored: dict | None) -> dict | None:
    """A run's saved FitConfig as today's fields: a field added since it was saved counts as its default (the
    run was trained without that lever), so adding an option does not orphan runs in progress."""
    if stored is None:
        return None
    return {**asdict(FitConfig()), **stored}


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class TrainingData:
    """The training split in memory as tensors: images, soft and hard targets, AU maps, sample weights."""

    def __init__(self, split, maps, valid, cfg: FitConfig):
        keep = split.labels >= 0
        if cfg.limit:
            keep &= np.cumsum(keep) <= cfg.limit
        self.images = torch.from_numpy(split.images[keep])
        labels = split.labels[keep]
        self.labels = torch.from_numpy(labels)
        soft = split.soft_targets[keep] if cfg.soft_targets else np.eye(7, dtype=np.float32)[labels]
        if cfg.soft_targets and cfg.target_power != 1.0:
            soft = sharpened(soft, cfg.target_power)
        if cfg.label_smoothing:
            soft = soft * (1 - cfg.label_smoothing) + cfg.label_smoothing / soft.shape[1]
        self.targets = torch.from_numpy(soft.astype(np.float32))
        self.maps = torch.from_numpy(maps[keep].astype(np.float32))
        self.valid = torch.from_numpy(valid[keep])
        counts = class_counts(labels).astype(np.float64)
        class_w = (np.maximum(counts, 1) / counts.mean()) ** -cfg.class_weight_power
        self.class_weights = class_w / (class_w * counts).sum() * counts.sum()
        self.weights = torch.from_numpy(self.class_weights[labels].astype(np.float32))

    def __len__(self) -> int:
        return len(self.labels)


def sharpened(distributions: np.ndarray, power: float) -> np.ndarray:
    """Each row raised to `power` and renormalised (the same argmax; power > 1 moves mass to it)."""
    d = np.asarray(distributions, dtype=np.float64) ** power
    return (d / d.sum(axis=1, keepdims=True)).astype(np.float32)


def lr_at(step: int, total: int, warmup: int, cfg: FitConfig) -> float:
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * (0.1 ** int(progress * 3))  # step: /10 at 1/3 and 2/3


def init_weights(model, path: str) -> None:
    """Load a checkpoint's weights into `model` for a warm restart; another architecture is one clear error."""
    from stream_fer.errors import StreamFerError

    source, state = load_model(path)  # a file that is no checkpoint, or weights that do not fit: one line
    if source.config != model.config:
        raise StreamFerError(f"--init-from {path}: its model config differs from this run's")
    model.load_state_dict(source.state_dict())
    log.info("initialised from %s (epoch %s)", path, state.get("epoch"))


def teacher_paths(distill_from: str) -> list[str]:
    """The checkpoints `distill_from` names: one path, or several comma-separated (blanks ignored)."""
    return [p.strip() for p in distill_from.split(",") if p.strip()]


class Teacher:
    """A frozen teacher for distillation: one stream-fer checkpoint of any size with the same classes and input
    size, or several (`distill_from` comma-separated) read as one, the average of their probabilities."""

    def __init__(self, distill_from: str, device):
        self.paths = teacher_paths(distill_from)
        self.models = [load_model(p, device=str(device))[0] for p in self.paths]
        for model in self.models:
            for p in model.parameters():
                p.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, dev) -> torch.Tensor:
        """Logits for [0, 1] images (N, 1, H, W), each model fed as its own config normalises."""
        return ensemble_logits([m(_model_input(images, m.config, dev))[0].float() for m in self.models])


def cached_teacher_logits(run_dir: Path, teacher: Teacher, images: torch.Tensor, dev) -> torch.Tensor:
    """The teacher's logits for every training face as it is stored (uint8, un-augmented), computed once
    and kept in the run folder under the teacher files' digest, so a resumed run reads them back."""
    import hashlib

    digest = hashlib.sha256()
    for path in teacher.paths:
        digest.update(Path(path).read_bytes())
    digest.update(images.numpy().tobytes())  # raw and aligned inputs are other faces
    path = run_dir / f"teacher_logits-{digest.hexdigest()[:12]}-{len(images)}.npy"
    if path.exists():
        return torch.from_numpy(np.load(path, allow_pickle=False))
    logits = torch.cat([teacher(images[i : i + 256].float().div(255).unsqueeze(1), dev).cpu()
                        for i in range(0, len(images), 256)])
    tmp = path.with_name(path.stem + ".part.npy")
    np.save(tmp, logits.numpy())
    tmp.replace(path)
    log.info("teacher logits for %d training faces cached in %s", len(images), path.name)
    return logits


def _model_input(images: torch.Tensor, config: ModelConfig, dev: torch.device) -> torch.Tensor:
    """[0, 1] images normalised as `config`'s network expects, on `dev` (channels-last on CPU)."""
    x = ((images - config.mean) / config.std).to(dev)
    return x.contiguous(memory_format=torch.channels_last) if dev.type == "cpu" else x


def make_optimizer(model, cfg: FitConfig):
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


@torch.no_grad()
def quick_validation(model, split, maps, valid, device, batch: int = 256) -> dict:
    """Validation accuracy (majority labels) and mean attention-AU cosine at the attention size."""
    from stream_fer.train.loss import alignment_cosine

    model.eval()
    keep = split.labels >= 0
    images = torch.from_numpy(split.images[keep])
    labels = torch.from_numpy(split.labels[keep])
    maps_t = torch.from_numpy(maps[keep].astype(np.float32))
    valid_t = torch.from_numpy(valid[keep])
    correct, cos_sum, cos_n = 0, 0.0, 0
    for i in range(0, len(labels), batch):
        x = normalise(images[i : i + batch], model.config).to(device)
        logits, att, _ = model(x)
        correct += (logits.argmax(1).cpu() == labels[i : i + batch]).sum().item()
        v = valid_t[i : i + batch]
        if v.any():
            cos_sum += alignment_cosine(att.float().cpu()[v], maps_t[i : i + batch][v]).sum().item()
            cos_n += int(v.sum())
    model.train()
    return {"val_accuracy": correct / max(1, len(labels)), "val_att_cos": cos_sum / max(1, cos_n)}


def fit(run_dir: Path, cfg: FitConfig, model_cfg: ModelConfig = ModelConfig(), data=None,
        device: str = "auto", aug: AugmentConfig = AugmentConfig(), max_epochs_this_call: int | None = None,
        progress: bool = True, splits=None, cache=None) -> dict:
    """Train (or resume) into run_dir; returns the history. `max_epochs_this_call` lets a caller stop
    early and resume later (the schedule still spans cfg.epochs). `splits` and `cache` default to the
    full FER+ data and the landmark cache; tests pass small slices."""
    from tqdm import tqdm

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    torch.manual_seed(cfg.seed)
    from stream_fer.train.aligned import INPUTS, aligned_splits

    if cfg.inputs not in INPUTS:  # before the data are read: a typo costs no minutes
        from stream_fer.errors import StreamFerError

        raise StreamFerError(f"--inputs {cfg.inputs!r}: expected {' or '.join(INPUTS)}")
    splits = splits or load_ferplus(data)
    if cfg.inputs == "aligned":
        splits, cache = aligned_splits(splits)
    cache = cache or load_cache()
    train_maps, train_valid = split_maps(splits["train"], cache)
    val_split = splits["valid"]
    if cfg.val_limit:
        val_split = val_split.subset(slice(0, cfg.val_limit))
    val_maps, val_valid = split_maps(val_split, cache)
    data_t = TrainingData(splits["train"], train_maps, train_valid, cfg)

    model = build_model(model_cfg).to(dev)
    if dev.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    if cfg.init_from:
        init_weights(model, cfg.init_from)
    optimizer = make_optimizer(model, cfg)
    ema = make_ema(model, cfg.ema_decay) if cfg.ema_decay else None
    teacher = Teacher(cfg.distill_from, dev) if cfg.distill_from else None
    cached_teacher = None
    if teacher is not None and cfg.distill_cached:
        if cfg.mixup:
            from stream_fer.errors import StreamFerError

            raise StreamFerError("--distill-cached cannot follow mixup's blended faces; use the online teacher")
        cached_teacher = cached_teacher_logits(run_dir, teacher, data_t.images, dev)
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda")
    generator = torch.Generator().manual_seed(cfg.seed)
    start_epoch, history, best = 0, [], -1.0
    last = run_dir / "last.pt"
    if last.exists():
        state = read_checkpoint(last)
        if stored_settings(state.get("fit_config")) != asdict(cfg) or state.get("config") != model_cfg.to_dict():
            from stream_fer.errors import StreamFerError

            raise StreamFerError(f"{run_dir} holds a run with other settings; use another --run-dir")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        if "torch_rng" in state:  # dropout draws from the global generator
            torch.set_rng_state(state["torch_rng"])
        start_epoch, history, best = state["epoch"] + 1, json.loads(state["history"]), state["best"]
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
            ema.n_averaged.fill_(int(state["ema_n"]))
        log.info("resuming %s at epoch %d", run_dir, start_epoch + 1)
    (run_dir / "fit_config.json").write_text(json.dumps({"fit": asdict(cfg), "model": model_cfg.to_dict()}, indent=2))

    steps_per_epoch = math.ceil(len(data_t) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    end_epoch = cfg.epochs if max_epochs_this_call is None else min(cfg.epochs, start_epoch + max_epochs_this_call)
    for epoch in range(start_epoch, end_epoch):
        model.train()
        order = torch.randperm(len(data_t), generator=generator)
        sums = {"loss": 0.0, "ce": 0.0, "align": 0.0, "cos": 0.0, "n": 0}
        t0 = time.time()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                   mininterval=5, disable=not progress)
        for i in bar:
            step = epoch * steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, warmup, cfg)
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            images = data_t.images[idx].float().div(255).unsqueeze(1)
            maps = data_t.maps[idx].unsqueeze(1)
            images, maps = augment_batch(images, maps, aug, generator)
            targets, valid, weights = data_t.targets[idx], data_t.valid[idx], data_t.weights[idx]
            if cfg.mixup:
                images, maps, targets, valid, weights = mixup(
                    images, maps, targets, valid, weights, cfg.mixup, np.random.default_rng([cfg.seed, step]))
            x = _model_input(images, model_cfg, dev)
            with torch.autocast(dev.type, dtype=torch.float16, enabled=dev.type == "cuda"):
                logits, attention, _, pooled = model.heads(model.features(x))
            logits = logits.float()
            loss, ce, align, cos = au_guided_loss(
                logits, attention.float(), targets.to(dev), maps.squeeze(1).to(dev), valid.to(dev), cfg.lam,
                weights.to(dev))
            if cfg.nnldl_k:
                loss = loss + cfg.nnldl_weight * kl_to(nnldl_targets(pooled, logits.softmax(1), cfg.nnldl_k), logits)
            if cached_teacher is not None:
                loss = loss + cfg.distill_weight * distillation_loss(
                    logits, cached_teacher[idx].to(dev), cfg.distill_temperature)
            elif teacher is not None:
                with torch.autocast(dev.type, dtype=torch.float16, enabled=dev.type == "cuda"):
                    teacher_logits = teacher(images, dev)
                loss = loss + cfg.distill_weight * distillation_loss(logits, teacher_logits, cfg.distill_temperature)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update_parameters(model)
            n = len(idx)
            sums["loss"] += loss.item() * n
            sums["ce"] += ce.item() * n
            sums["align"] += align.item() * n
            sums["cos"] += (0.0 if math.isnan(cos.item()) else cos.item()) * n
            sums["n"] += n
            if i % 20 == 0:
                bar.set_postfix(loss=f"{sums['loss'] / sums['n']:.3f}", cos=f"{sums['cos'] / sums['n']:.3f}")
        record = {"epoch": epoch + 1, "seconds": round(time.time() - t0, 1),
                  **{k: round(v / sums["n"], 4) for k, v in sums.items() if k != "n"}}
        if ema is not None:  # both are reported (the ablation); the EMA weights are the ones kept
            raw = quick_validation(model, val_split, val_maps, val_valid, dev)
            record.update({f"{k}_raw": round(v, 4) for k, v in raw.items()})
        kept = ema.module if ema is not None else model
        record.update({k: round(v, 4) for k, v in quick_validation(kept, val_split, val_maps, val_valid, dev).items()})
        history.append(record)
        log.info("epoch %d: %s", epoch + 1, record)
        if record["val_accuracy"] > best:
            best = record["val_accuracy"]
            save_checkpoint(run_dir / "best.pt", kept, epoch=epoch + 1, metrics=json.dumps(record),
                            fit_config=asdict(cfg))
        extra = {} if ema is None else {"ema": cpu_state(ema.module), "ema_n": int(ema.n_averaged)}
        save_checkpoint(last, model, epoch=epoch, optimizer=optimizer.state_dict(), generator=generator.get_state(),
                        torch_rng=torch.get_rng_state(), history=json.dumps(history), best=best, fit_config=asdict(cfg),
                        **extra)
        (run_dir / "history.json").write_text(json.dumps(history, indent=1))
    return {"history": history, "best_val_accuracy": best, "run_dir": str(run_dir)}


def register(sub) -> None:
    parser = sub.add_parser("fit", help="train the AU-guided model (--lam 0: vanilla); rerun to resume")
    parser.add_argument("--run-dir", type=Path, help="checkpoint folder (default: <cache>/runs/<name>)")
    parser.add_argument("--name", default="au", help="run name under the cache when --run-dir is not given")
    parser.add_argument("--data", help="ferplus.tar.gz or its extracted folder")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    defaults = FitConfig()
    for field, value in asdict(defaults).items():
        flag = "--" + field.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=value)
        else:
            parser.add_argument(flag, type=type(value), default=value)
    net = ModelConfig()
    parser.add_argument("--widths", type=int, nargs="+", default=list(net.widths), metavar="C",
                        help=f"channels of the residual blocks, one per block (default: "
                             f"{' '.join(map(str, net.widths))}; strides {' '.join(map(str, net.strides))})")
    parser.add_argument("--stem-channels", type=int, default=net.stem_channels, metavar="C",
                        help=f"channels of the stride-2 stem convolution (default: {net.stem_channels})")
    parser.set_defaults(handler=_fit)


def network_config(widths, stem_channels: int) -> ModelConfig:
    """The network `--widths` and `--stem-channels` ask for (today's strides), or one clear error."""
    from stream_fer.errors import StreamFerError

    widths = tuple(int(w) for w in widths)
    if len(widths) != len(ModelConfig.strides) or min(widths + (int(stem_channels),)) < 1:
        raise StreamFerError(f"--widths takes {len(ModelConfig.strides)} channel counts >= 1, one per residual block "
                             f"(strides {' '.join(map(str, ModelConfig.strides))}), not {' '.join(map(str, widths))}")
    return ModelConfig(stem_channels=int(stem_channels), widths=widths)


def _fit(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = FitConfig(**{f: getattr(args, f) for f in FitConfig.__dataclass_fields__})
    model_cfg = network_config(args.widths, args.stem_channels)
    log.info("network: widths %s, stem %d: %.0f M multiply-adds per face", model_cfg.widths, model_cfg.stem_channels,
             count_macs(build_model(model_cfg)) / 1e6)
    run_dir = args.run_dir or train_cache().parent / "runs" / args.name
    result = fit(run_dir, cfg, model_cfg, data=args.data, device=args.device)
    print(json.dumps({"best_val_accuracy": result["best_val_accuracy"], "run_dir": result["run_dir"]}))
    return 0
