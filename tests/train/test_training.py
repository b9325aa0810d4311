"""The training package on a small slice of the real FER+ data."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from stream_fer.train.au_targets import split_maps
from stream_fer.train.augment import AugmentConfig, augment_batch
from stream_fer.train.checkpoint import load_model, read_checkpoint, save_checkpoint
from stream_fer.train.fit import FitConfig, fit
from stream_fer.train.loss import au_guided_loss
from stream_fer.train.model import ModelConfig, build_model, count_macs, normalise

NO_AUG = AugmentConfig(flip=0, max_rotation_deg=0, scale=(1, 1), max_shift=0, brightness=0, contrast=0, erase=0)


def test_majority_labels_match_published_counts(ferplus_splits):
    from stream_fer.train.data import class_counts

    assert class_counts(ferplus_splits["train"].labels).tolist() == [9460, 7420, 3381, 3454, 2420, 190, 655]
    assert int((ferplus_splits["test"].labels >= 0).sum()) == 3361
    soft = ferplus_splits["valid"].soft_targets
    assert np.allclose(soft.sum(axis=1), 1.0, atol=1e-5)


def test_landmarks_found_on_most_faces(small_cache):
    assert small_cache.found.mean() > 0.9
    pts = small_cache.points[small_cache.found].astype(np.float32)
    eyes = pts[:, [33, 133, 362, 263]]  # eye corners: inside the 48-px image (chins may not be)
    inside = ((eyes > 0) & (eyes < 48)).all(axis=(1, 2))
    assert inside.mean() > 0.95
    assert (pts[:, 33, 1] < pts[:, 61, 1]).all()  # eyes above the mouth
    assert (pts[:, 33, 0] < pts[:, 263, 0]).mean() > 0.95  # subject's right eye on the image left


def test_model_outputs_and_cost():
    model = build_model()
    logits, attention, cams = model(torch.zeros(3, 1, 48, 48))
    assert logits.shape == (3, 7)
    assert attention.shape[-2:] == (12, 12) and attention.shape[0] == 3
    assert cams.shape == (3, 7, 12, 12)
    assert (attention >= 0).all()
    assert count_macs(model) < 1e9


def test_fit_takes_the_network_size_from_its_command_line():
    """`python -m train fit --widths ... --stem-channels ...` trains a wider network (the budget is 200 M
    multiply-adds per face); the defaults are today's network; a wrong count is one clear error."""
    from stream_fer.errors import StreamFerError
    from stream_fer.train.__main__ import build_parser
    from stream_fer.train.fit import network_config

    args = build_parser().parse_args(["fit", "--widths", "64", "128", "192"])
    wide = network_config(args.widths, args.stem_channels)
    assert wide.widths == (64, 128, 192) and wide.stem_channels == 32
    assert 160e6 < count_macs(build_model(wide)) < 200e6 < count_macs(build_model(network_config([64, 128, 256], 32)))
    default = build_parser().parse_args(["fit"])
    assert network_config(default.widths, default.stem_channels) == ModelConfig()
    with pytest.raises(StreamFerError, match="--widths takes 3 channel counts"):
        network_config([64, 128], 32)


def test_au_guided_loss_aligns_attention_within_a_few_steps(small_splits, small_cache):
    split = small_splits["train"]
    maps, valid = split_maps(split, small_cache)
    torch.manual_seed(0)
    model = build_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = normalise(torch.from_numpy(split.images[:64]), model.config)
    targets = torch.from_numpy(split.soft_targets[:64])
    m = torch.from_numpy(maps[:64].astype(np.float32))
    v = torch.from_numpy(valid[:64])
    assert v.sum() > 20
    losses, cosines = [], []
    for _ in range(12):
        logits, att, _ = model(x)
        loss, ce, align, cos = au_guided_loss(logits, att, targets, m, v, lam=4.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        cosines.append(cos.item())
    assert losses[-1] < losses[0]
    assert cosines[-1] > cosines[0] + 0.05


def test_augmentation_moves_image_and_map_together():
    image = torch.zeros(1, 1, 48, 48)
    image[..., 10:14, 30:34] = 1.0
    amap = image.clone()
    gen = torch.Generator().manual_seed(3)
    cfg = AugmentConfig(flip=1.0, max_rotation_deg=10, brightness=0, contrast=0, erase=0)
    out_img, out_map = augment_batch(image, amap, cfg, gen)
    assert torch.allclose(out_img, out_map, atol=1e-5)  # same geometry, photometric off
    assert out_img[..., :, :24].sum() > out_img[..., :, 24:].sum()  # flipped to the left half


def test_resume_continues_where_it_stopped(tmp_path, small_splits, small_cache):
    cfg = FitConfig(epochs=2, batch_size=32, lam=4.0, seed=1)
    model_cfg = ModelConfig(widths=(16, 32, 32), stem_channels=8)
    kwargs = dict(model_cfg=model_cfg, device="cpu", progress=False, splits=small_splits, cache=small_cache)
    straight = fit(tmp_path / "straight", cfg, **kwargs)
    first = fit(tmp_path / "resumed", cfg, max_epochs_this_call=1, **kwargs)
    assert len(first["history"]) == 1
    resumed = fit(tmp_path / "resumed", cfg, **kwargs)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    a = read_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = read_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key
    assert straight["history"][-1]["loss"] == pytest.approx(resumed["history"][-1]["loss"], rel=1e-4)


def test_a_run_saved_before_an_option_existed_still_resumes_and_other_settings_are_refused(tmp_path, small_splits,
                                                                                          small_cache):
    from stream_fer.errors import StreamFerError

    cfg = FitConfig(epochs=2, batch_size=32, seed=1)
    kwargs = dict(model_cfg=ModelConfig(widths=(16, 32, 32), stem_channels=8), device="cpu", progress=False,
                  splits=small_splits, cache=small_cache)
    fit(tmp_path / "run", cfg, max_epochs_this_call=1, **kwargs)
    last = tmp_path / "run" / "last.pt"
    state = torch.load(last, weights_only=True)
    del state["fit_config"]["distill_cached"]  # as saved before that option was added
    torch.save(state, last)
    assert [h["epoch"] for h in fit(tmp_path / "run", cfg, **kwargs)["history"]] == [1, 2]
    with pytest.raises(StreamFerError, match="other settings"):
        fit(tmp_path / "run", dataclasses.replace(cfg, lr=0.01), **kwargs)


def test_checkpoint_loads_with_weights_only(tmp_path):
    model = build_model(ModelConfig(widths=(8, 16, 16), stem_channels=8))
    path = save_checkpoint(tmp_path / "m.pt", model, epoch=3, metrics=json.dumps({"a": 1}))
    state = torch.load(path, weights_only=True)  # would raise if anything needed unpickling code
    assert state["epoch"] == 3
    loaded, _ = load_model(path)
    x = torch.randn(2, 1, 48, 48)
    model.eval()
    assert torch.allclose(loaded(x)[0], model(x)[0])


def test_wrong_checkpoint_is_one_clear_error(tmp_path):
    from stream_fer.errors import StreamFerError

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(StreamFerError, match="not a readable"):
        load_model(garbage)
    other = tmp_path / "other.pt"
    torch.save({"format": "stream-fer-checkpoint", "config": ModelConfig().to_dict(),
                "model": {"fc.weight": torch.zeros(3, 3)}}, other)
    with pytest.raises(StreamFerError, match="does not match"):
        load_model(other)


def test_warm_restart_starts_from_the_checkpoint_and_refuses_another_architecture(tmp_path, small_splits,
                                                                                  small_cache):
    from stream_fer.errors import StreamFerError
    from stream_fer.train.fit import init_weights

    model_cfg = ModelConfig(widths=(16, 32, 32), stem_channels=8)
    first = fit(tmp_path / "stage1", FitConfig(epochs=1, batch_size=32, seed=1), model_cfg=model_cfg, device="cpu",
                progress=False, splits=small_splits, cache=small_cache)
    stage1 = tmp_path / "stage1" / "last.pt"
    fresh = build_model(model_cfg)
    init_weights(fresh, str(stage1))
    trained = read_checkpoint(stage1)["model"]
    assert all(torch.equal(fresh.state_dict()[k], trained[k]) for k in trained)
    # the second stage starts where the first ended: its first epoch's loss is below the first stage's
    second = fit(tmp_path / "stage2", FitConfig(epochs=1, batch_size=32, seed=1, lr=0.01, init_from=str(stage1)),
                 model_cfg=model_cfg, device="cpu", progress=False, splits=small_splits, cache=small_cache)
    assert second["history"][0]["loss"] < first["history"][0]["loss"]
    with pytest.raises(StreamFerError, match="model config differs"):
        init_weights(build_model(ModelConfig(widths=(8, 16, 16), stem_channels=8)), str(stage1))


def test_test_time_flip_averages_a_face_with_its_mirror_in_eval_mode_only():
    torch.manual_seed(0)
    cfg = ModelConfig(widths=(8, 16, 16), stem_channels=8)
    plain = build_model(cfg).eval()
    flipping = build_model(dataclasses.replace(cfg, test_time_flip=True)).eval()
    flipping.load_state_dict(plain.state_dict())
    x = torch.randn(3, 1, 48, 48)
    with torch.no_grad():
        logits, att, cams = flipping(x)
        a, b = plain(x), plain(x.flip(-1))
        torch.testing.assert_close(logits, (a[0] + b[0]) / 2)
        torch.testing.assert_close(att, (a[1] + b[1].flip(-1)) / 2)
        torch.testing.assert_close(cams, (a[2] + b[2].flip(-1)) / 2)
        # a mirrored face gets the same scores and mirrored maps
        mirrored = flipping(x.flip(-1))
        torch.testing.assert_close(mirrored[0], logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mirrored[1], att.flip(-1), atol=1e-5, rtol=1e-5)
    assert count_macs(flipping) == 2 * count_macs(plain)
    flipping.train()
    assert not flipping.flips()  # training sees single images (the augmentation flips)


def test_package_writes_a_weights_only_checkpoint_with_the_inference_settings(tmp_path):
    from stream_fer.train.package import package_checkpoint

    model = build_model(ModelConfig(widths=(8, 16, 16), stem_channels=8))
    src = save_checkpoint(tmp_path / "best.pt", model, epoch=7, metrics="{}", optimizer={"junk": torch.zeros(3)})
    out = tmp_path / "ship.pt"
    assert package_checkpoint(src, out, test_time_flip=True).test_time_flip
    state = torch.load(out, weights_only=True)
    assert state["config"]["test_time_flip"] is True and state["epoch"] == 7 and "optimizer" not in state
    loaded, _ = load_model(out)
    assert loaded.flips() and all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
