"""Training on the product's aligned crops (train/aligned.py, `--inputs aligned`) on a small real FER+ slice."""

from __future__ import annotations

import numpy as np
import pytest

from stream_fer.train.model import ModelConfig

TINY = ModelConfig(widths=(16, 32, 32), stem_channels=8)


@pytest.fixture(scope="module")
def aligned(small_splits, landmarker_model, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("STREAM_FER_CACHE", str(tmp_path_factory.mktemp("cache")))  # keep the user's faces cache out of it
    from stream_fer.train.aligned import aligned_splits
    from stream_fer.train.data import IMAGE_SIZE
    from stream_fer.train.product_path import split_faces

    splits = {name: small_splits[name].subset(slice(0, 40)) for name in ("train", "valid")}
    try:
        out, cache = aligned_splits(splits, landmarker_path=landmarker_model)
        faces = {name: split_faces(splits[name], landmarker_model, IMAGE_SIZE) for name in splits}  # cached now
        yield splits, out, cache, faces
    finally:
        mp.undo()


def test_found_faces_become_the_products_crops_with_their_crop_landmarks(aligned):
    splits, out, cache, faces = aligned
    for name in ("train", "valid"):
        found = faces[name]["found"]
        assert found.mean() > 0.8  # MediaPipe finds most FER+ faces on the upscaled image
        assert out[name].name == f"{name}-aligned"
        np.testing.assert_array_equal(out[name].keys, splits[name].keys)
        np.testing.assert_array_equal(out[name].votes, splits[name].votes)  # same labels
        np.testing.assert_array_equal(out[name].images[found], faces[name]["crops"][found])
        np.testing.assert_array_equal(out[name].images[~found], splits[name].images[~found])  # raw, no map
        assert not np.array_equal(out[name].images, splits[name].images)  # an aligned crop is another image
        points, has = cache.lookup(out[name].keys)
        np.testing.assert_array_equal(has, found)
        np.testing.assert_allclose(points[found], faces[name]["crop_points"][found], atol=0.05)  # float16


def test_the_au_maps_come_from_the_crop_landmarks(aligned):
    from stream_fer.train.au_targets import render_maps, split_maps

    splits, out, cache, faces = aligned
    maps, valid = split_maps(out["train"], cache)
    found = faces["train"]["found"]
    assert valid.any() and not valid[~found].any()  # a face the product does not find has no map
    points = faces["train"]["crop_points"].astype(np.float16)  # as the cache keeps them
    expected, expected_valid = render_maps(points, found, out["train"].labels)
    np.testing.assert_array_equal(valid, expected_valid)
    np.testing.assert_allclose(np.asarray(maps)[valid], expected[valid].astype(np.float32), atol=1e-3)


def test_fit_trains_and_validates_on_aligned_crops(aligned, tmp_path, small_splits, small_cache, landmarker_model,
                                                   monkeypatch):
    from stream_fer.errors import StreamFerError
    from stream_fer.train.fit import FitConfig, fit

    splits, *_ = aligned
    monkeypatch.setenv("STREAM_FER_LANDMARKER", str(landmarker_model))
    cfg = FitConfig(epochs=2, batch_size=16, seed=1, inputs="aligned")
    result = fit(tmp_path / "aligned", cfg, model_cfg=TINY, device="cpu", progress=False, splits=dict(splits))
    losses = [h["loss"] for h in result["history"]]
    assert losses[-1] < losses[0] and 0 <= result["history"][-1]["val_accuracy"] <= 1
    with pytest.raises(StreamFerError, match="raw or aligned"):
        fit(tmp_path / "bad", FitConfig(epochs=1, inputs="crops"), model_cfg=TINY, device="cpu", progress=False,
            splits=dict(splits), cache=small_cache)
