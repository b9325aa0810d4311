"""How well the trust score flags wrong predictions, against the attention-AU cosine and plain confidence, on
FER+ through the product's own path (train/product_path.py: MediaPipe on the upscaled image, aligned crop,
the shipped ONNX engine), and how calibrated the probabilities are before and after the temperature.

    python benchmarks/trust.py                  # uses engines/default/trust.json as shipped (no refit)
    python benchmarks/trust.py --json out.json  # also write the figures
    python benchmarks/trust.py --video ../shared/videos/WolfgangLanger_Pexels.mp4 --figure docs/trust_timeline.png

The trust model was fitted on the validation split only (`python -m train trust`); the test split is
looked at here. AUROC: the chance that a random right prediction scores above a random wrong one; with
95% bootstrap intervals (500 resamples of the faces) for each and for the trust score's gain over confidence.
Expressive = predicted class is not neutral (the cosine exists only there). The last line is
`trust: auroc cos C conf F score S, ece before E1 after E2` (test split, expressive predictions; ECE of the
top probability over all predictions with a face).

First run: about 8 minutes of one CPU core (MediaPipe on 7,000 images), cached after that.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream_fer.engines import default_model_dir
from stream_fer.errors import StreamFerError


def _row(name: str, split: str, entry: dict) -> str:
    cos = entry.get("auroc_cosine")
    return (f"{split:<6} {name:<11} {entry['n']:>5} {100 * entry['accuracy']:>6.1f}% "
            f"{'-' if cos is None else f'{cos:.3f}':>7} {entry['auroc_confidence']:>7.3f} {entry['auroc_trust']:>7.3f}")


# WolfgangLanger_Pexels.mp4, ranges marked by eye on extracted frames (tests/test_trust.py checks the same).
CLIP_RANGES = (("steady, unoccluded", ((30, 56), (260, 440)), "tab:green"),
               ("hand over the mouth", ((60, 228),), "tab:red"),
               ("transition", ((4, 24), (224, 248)), "tab:orange"))


def video_figures(clip: Path, figure: Path | None) -> None:
    """Trust on the shared clip per marked range, and its report timeline with the ranges drawn under it."""
    import numpy as np

    import stream_fer

    df = stream_fer.analyze(clip).to_pandas()
    trust = df.set_index("frame_index")["trust"].astype("float64")
    print(f"\n{clip.name}: trust by frame range (marked by eye)")
    for name, ranges, _ in CLIP_RANGES:
        v = trust.loc[np.concatenate([np.arange(a, b + 1) for a, b in ranges])]
        print(f"  {name:<20} {', '.join(f'{a}-{b}' for a, b in ranges):<16} mean {v.mean():.2f}, "
              f"below 0.5 {100 * (v < 0.5).mean():.0f}%")
    if figure is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stream_fer.report import plot_timeline

    fps = float(df["frame_index"].max() / df["timestamp"].max())
    fig, ax = plt.subplots(figsize=(11, 3.4))
    plot_timeline(df, ax=ax)
    for name, ranges, colour in CLIP_RANGES:
        for a, b in ranges:
            ax.axvspan(a / fps, b / fps, ymin=0.0, ymax=0.04, color=colour, alpha=0.8)
            ax.text((a + b) / 2 / fps, 0.05, name.split(",")[0], ha="center", fontsize=7, color=colour,
                    transform=ax.get_xaxis_transform())
    ax.set_title(f"{clip.name}: smoothed probabilities and trust (frame ranges marked by eye)", fontsize=9)
    fig.tight_layout()
    fig.savefig(figure, dpi=100)
    print(f"  timeline: {figure}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=default_model_dir())
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--data", help="ferplus.tar.gz or its extracted folder")
    parser.add_argument("--video", type=Path, help="also the trust by marked frame range on this clip "
                                                   "(the shared WolfgangLanger_Pexels.mp4)")
    parser.add_argument("--figure", type=Path, help="with --video: save its timeline here")
    args = parser.parse_args(argv)

    from stream_fer.train.data import load_ferplus
    from stream_fer.train.product_path import mirror_probs, run_split
    from stream_fer.train.trust import evaluate_trust

    from stream_fer.engines.base import ModelInfo
    from stream_fer.trust import trust_file_for

    try:
        info = ModelInfo.from_file(args.model_dir / "model.json")
        found = trust_file_for(args.model_dir, info.source_checkpoint_sha256)
        if found is None:
            raise StreamFerError(f"no trust.json for the model in {args.model_dir}")
        trust_path = found[0]
        spec = json.loads(trust_path.read_text())
        splits = load_ferplus(args.data)
    except (OSError, StreamFerError) as exc:
        print(f"trust benchmark: {exc}", file=sys.stderr)
        return 2
    results = {}
    for split in ("valid", "test"):
        out = run_split(splits[split], args.model_dir)
        results[split] = evaluate_trust(out, spec, mirror_probs(out, args.model_dir))

    print(f"trust model: {trust_path} (temperature {spec['temperature']:.3f}; fitted on FER+ validation)")
    print("AUROC of each signal as a detector of right predictions (product path):")
    print(f"{'split':<6} {'predicted':<11} {'n':>5} {'right':>7} {'cosine':>7} {'conf':>7} {'trust':>7}")
    for split, res in results.items():
        for kind in ("expressive", "neutral", "all"):
            print(_row(kind, split, res[kind]))
    print("\n95% bootstrap intervals of the AUROCs (faces resampled; trust - conf paired on the same resamples):")
    for split, res in results.items():
        for kind in ("expressive", "neutral", "all"):
            names = {"confidence": "conf", "trust_minus_confidence": "trust - conf"}
            ci = ", ".join(f"{names.get(k, k)} [{a:.3f}, {b:.3f}]" for k, (a, b) in res[kind]["ci95"].items())
            print(f"{split:<6} {kind:<11} {ci}")
    print("\ncalibration (all predictions with a face; ECE with 15 equal-width bins):")
    print(f"{'split':<6} {'coverage':>8} {'mean top p':>10} {'mean T-scaled':>13} {'accuracy':>8} "
          f"{'ECE before':>10} {'ECE after':>9} {'ECE trust':>9} {'NLL before':>10} {'NLL after':>9}")
    for split, r in results.items():
        print(f"{split:<6} {100 * r['coverage']:>7.1f}% {r['mean_top_probability']:>10.3f} "
              f"{r['mean_calibrated']:>13.3f} {r['accuracy']:>8.3f} {r['ece_before']:>10.3f} "
              f"{r['ece_after']:>9.3f} {r['ece_trust']:>9.3f} "
              f"{r['nll_before']:>10.3f} {r['nll_after']:>9.3f}")
    print("\ntrust score as a chance of being right (test split):")
    for b in results["test"]["trust_bins"]:
        if b["n"]:
            print(f"  trust {b['from']:.2f}-{b['to']:.2f}: n {b['n']:>5}, mean trust {b['mean_trust']:.3f}, "
                  f"right {b['accuracy']:.3f}")
    q = results["test"]["expressive"]["accuracy_by_cosine_quartile"]
    print("test, expressive: accuracy by cosine quartile (low to high): " + " / ".join(f"{v:.2f}" for v in q))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.video:
        video_figures(args.video, args.figure)
    t = results["test"]
    e = t["expressive"]
    print(f"trust: auroc cos {e['auroc_cosine']:.3f} conf {e['auroc_confidence']:.3f} score {e['auroc_trust']:.3f}, "
          f"ece before {t['ece_before']:.3f} after {t['ece_after']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
