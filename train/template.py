"""`python -m train template`: the alignment template, the mean landmark layout of the FER+ training
faces in 48-px coordinates. The run time aligns every face to it so its crops look like training data."""

from __future__ import annotations

import numpy as np

from stream_fer.face.alignment import TEMPLATE_PATH
from stream_fer.train.data import load_ferplus
from stream_fer.train.landmarks import load_cache


def mean_layout(cache, keys) -> np.ndarray:
    points, found = cache.lookup(keys)
    return points[found].mean(axis=0).astype(np.float32)


def register(sub) -> None:
    parser = sub.add_parser("template", help="write the alignment template from the landmark cache")
    parser.add_argument("--data", help="ferplus.tar.gz or its extracted folder")
    parser.set_defaults(handler=_template)


def _template(args) -> int:
    split = load_ferplus(args.data)["train"]
    template = mean_layout(load_cache(), split.keys)
    TEMPLATE_PATH.parent.mkdir(parents=True, exist_ok=True)
    np.save(TEMPLATE_PATH, template)
    print(f"template of {len(split)} training faces -> {TEMPLATE_PATH}")
    return 0
