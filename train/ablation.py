"""`python -m train ablation RUN_DIR...`: the model card's ablation table from the runs' histories
(validation split only: the best epoch by validation accuracy, and for EMA runs the raw weights beside)."""

from __future__ import annotations

import json
from pathlib import Path

from stream_fer.errors import StreamFerError
from stream_fer.train.fit import teacher_paths

# FitConfig fields that describe a lever, in the order the table names them
_LEVERS = ("lam", "epochs", "lr", "init_from", "ema_decay", "mixup", "nnldl_k", "distill_from", "seed")


def run_row(run_dir: Path) -> dict:
    """One run: its levers and its best validation epoch (EMA weights where EMA was on)."""
    run_dir = Path(run_dir)
    try:
        history = json.loads((run_dir / "history.json").read_text())
        config = json.loads((run_dir / "fit_config.json").read_text())["fit"]
    except (OSError, ValueError, KeyError) as exc:
        raise StreamFerError(f"{run_dir}: not a training run folder ({type(exc).__name__})") from None
    if not history:
        raise StreamFerError(f"{run_dir}: no finished epoch yet")
    best = max(history, key=lambda h: h["val_accuracy"])
    row = {"run": run_dir.name, "epochs_done": len(history), "best_epoch": best["epoch"],
           "val_accuracy": best["val_accuracy"], "val_att_cos": best["val_att_cos"],
           "seconds_per_epoch": sum(h["seconds"] for h in history) / len(history)}
    if "val_accuracy_raw" in best:
        best_raw = max(history, key=lambda h: h["val_accuracy_raw"])
        row.update(raw_best_epoch=best_raw["epoch"], val_accuracy_raw=best_raw["val_accuracy_raw"])
    row["levers"] = {k: config.get(k) for k in _LEVERS}
    return row


def markdown(rows: list[dict]) -> str:
    def lever_text(levers: dict) -> str:
        parts = [f"lambda {levers['lam']:g}", f"{levers['epochs']} ep, lr {levers['lr']:g}"]
        if levers.get("init_from"):
            init = Path(levers["init_from"])  # a run's last.pt / best.pt is named by its run folder
            parts.append(f"from {init.parent.name if init.stem in ('last', 'best') else init.stem}")
        if levers.get("ema_decay"):
            parts.append(f"EMA {levers['ema_decay']:g}")
        if levers.get("mixup"):
            parts.append(f"mixup {levers['mixup']:g}")
        if levers.get("nnldl_k"):
            parts.append(f"NNLDL k={levers['nnldl_k']}")
        if levers.get("distill_from"):
            teachers = [Path(t).stem for t in teacher_paths(levers["distill_from"])]
            parts.append(f"KD from {' + '.join(teachers)}")
        return ", ".join(parts)

    lines = ["| run | recipe | epochs done | best epoch | valid acc | valid acc, raw weights | valid ATT-cos "
             "| s/epoch |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        raw = f"{100 * r['val_accuracy_raw']:.2f}% (ep {r['raw_best_epoch']})" if "val_accuracy_raw" in r else "-"
        lines.append(f"| {r['run']} | {lever_text(r['levers'])} | {r['epochs_done']} | {r['best_epoch']} | "
                     f"{100 * r['val_accuracy']:.2f}% | {raw} | {r['val_att_cos']:.3f} | "
                     f"{r['seconds_per_epoch']:.0f} |")
    return "\n".join(lines)


def register(sub) -> None:
    parser = sub.add_parser("ablation", help="the ablation table (validation) of finished or running runs")
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (with history.json)")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a markdown table")
    parser.set_defaults(handler=_ablation)


def _ablation(args) -> int:
    rows = [run_row(r) for r in args.runs]
    print(json.dumps(rows, indent=1) if args.json else markdown(rows))
    return 0
