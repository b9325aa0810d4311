"""Checkpoints: plain dicts of tensors and primitives, read with torch.load(weights_only=True) so a
checkpoint can never run code. Every checkpoint carries the model config needed to rebuild the net."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from stream_fer.errors import StreamFerError, first_line
from stream_fer.train.model import AUNet, ModelConfig, build_model

FORMAT = "stream-fer-checkpoint"
VERSION = 1


def cpu_state(model: torch.nn.Module) -> dict:
    """The module's weights and buffers, detached, on the CPU (what a checkpoint stores)."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def save_checkpoint(path: Path, model: AUNet, **extra) -> Path:
    """Atomic save of {format, version, config, model state, **extra}."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(),
             "model": cpu_state(model), **extra}
    tmp = path.with_name(path.name + ".part")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise StreamFerError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise StreamFerError(f"not a readable stream-fer checkpoint: {path} ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise StreamFerError(f"{path} is not a stream-fer checkpoint (no '{FORMAT}' header)")
    return state


def load_model(path, device: str = "cpu") -> tuple[AUNet, dict]:
    """The model (eval mode) and the full checkpoint dict; a mismatching architecture is one clear error."""
    state = read_checkpoint(path)
    try:
        model = build_model(ModelConfig.from_dict(state["config"]))
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise StreamFerError(f"checkpoint {path} does not match the stream-fer model: {first_line(exc)}") from None
    return model.to(device).eval(), state

