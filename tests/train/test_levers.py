"""The recipe's optional levers (train/levers.py): hand-checked values, and real runs on a small FER+ slice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stream_fer.train.checkpoint import read_checkpoint, save_checkpoint
from stream_fer.train.fit import FitConfig, fit
from stream_fer.train.levers import distillation_loss, ensemble_logits, kl_to, mixup, nnldl_targets
from stream_fer.train.model import ModelConfig, build_model

TINY = ModelConfig(widths=(16, 32, 32), stem_channels=8)


def test_nnldl_pseudo_labels_on_a_hand_checked_batch():
    # faces 0 and 1 point the same way, 2 is at 45 degrees, 3 is opposite to 0
    features = torch.tensor([[1.0, 0.0], [2.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    d = nnldl_targets(features, probs, k=2)
    c = 2 ** -0.5  # cos 45 degrees
    eps = 1e-6
    # face 0: neighbours 1 (cos 1) and 2 (cos c); face 3: neighbour 2 (cos -c -> 0) and 0 or 1 (cos -1 -> 0)
    expected0 = ((1 + eps) * probs[1] + (c + eps) * probs[2]) / (1 + c + 2 * eps)
    assert torch.allclose(d[0], expected0, atol=1e-5)
    assert torch.allclose(d[1], ((1 + eps) * probs[0] + (c + eps) * probs[2]) / (1 + c + 2 * eps), atol=1e-5)
    assert torch.allclose(d[2], (probs[0] + probs[1]) / 2, atol=1e-5)  # 0 and 1 both at 45 degrees
    assert d[3, 2] == pytest.approx(0.5, abs=1e-4)  # two neighbours, both clipped to (almost) zero weight
    assert torch.allclose(d.sum(1), torch.ones(4), atol=1e-5)
    assert not torch.allclose(d[0], probs[0])  # a face never votes for itself


def test_kl_and_distillation_terms():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    assert kl_to(logits.softmax(1), logits).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(logits, logits, temperature=2.0).item() == pytest.approx(0.0, abs=1e-6)
    teacher = torch.tensor([[0.0, 3.0, 0.0], [1.0, 0.0, 0.0]])
    loss = distillation_loss(logits.requires_grad_(), teacher, temperature=2.0)
    assert loss.shape == () and loss.item() > 0
    loss.backward()
    assert logits.grad.shape == (2, 3)


def test_an_ensemble_teacher_is_the_average_of_its_members_probabilities():
    a = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.2, 0.6]]))
    b = torch.log(torch.tensor([[0.1, 0.8, 0.1], [0.2, 0.4, 0.4]])) + 5.0  # a shift changes no probability
    mean = ensemble_logits([a, b]).softmax(1)
    assert torch.allclose(mean, torch.tensor([[0.4, 0.5, 0.1], [0.2, 0.3, 0.5]]), atol=1e-6)
    assert torch.equal(ensemble_logits([a]), a)  # one teacher: its logits as they are


def test_a_teacher_of_two_checkpoints_distils_their_average(tmp_path, small_splits, small_cache):
    from stream_fer.train.fit import Teacher, TrainingData
    from stream_fer.train.au_targets import split_maps
    from stream_fer.train.model import normalise

    torch.manual_seed(0)
    one, two = build_model(TINY).eval(), build_model(ModelConfig(widths=(8, 16, 16), stem_channels=8)).eval()
    paths = [save_checkpoint(tmp_path / f"t{i}.pt", m) for i, m in enumerate((one, two))]
    cfg = FitConfig(epochs=2, batch_size=32, seed=1, distill_from=",".join(map(str, paths)), distill_cached=True)
    result = fit(tmp_path / "pair", cfg, model_cfg=TINY, device="cpu", progress=False, splits=small_splits,
                 cache=small_cache)
    assert len(result["history"]) == 2
    from stream_fer.train.ablation import markdown, run_row

    assert "KD from t0 + t1" in markdown([run_row(tmp_path / "pair")])  # the ablation table names both
    (stored,) = (tmp_path / "pair").glob("teacher_logits-*.npy")
    images = TrainingData(small_splits["train"], *split_maps(small_splits["train"], small_cache), cfg).images
    with torch.no_grad():
        x = images[:40]
        expected = (one(normalise(x, one.config))[0].softmax(1) + two(normalise(x, two.config))[0].softmax(1)) / 2
    assert torch.allclose(torch.from_numpy(np.load(stored))[:40].softmax(1), expected, atol=1e-5)
    teacher = Teacher(cfg.distill_from, "cpu")  # online (not cached): the same average on any batch
    assert len(teacher.models) == 2
    assert torch.allclose(teacher(x.float().div(255).unsqueeze(1), torch.device("cpu")).softmax(1), expected,
                          atol=1e-5)


def test_mixup_blends_image_map_targets_and_weights_alike():
    n = 6
    images = torch.rand(n, 1, 8, 8)
    maps = torch.rand(n, 1, 8, 8)
    targets = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2])]
    valid = torch.tensor([True, True, False, True, False, True])
    weights = torch.arange(1.0, n + 1)
    out = mixup(images, maps, targets, valid, weights, alpha=0.4, rng=np.random.default_rng(0))
    rng = np.random.default_rng(0)
    lam, perm = rng.beta(0.4, 0.4), torch.from_numpy(rng.permutation(n))
    mi, mm, mt, mv, mw = out
    assert torch.allclose(mi, lam * images + (1 - lam) * images[perm])
    assert torch.allclose(mt, lam * targets + (1 - lam) * targets[perm])
    assert torch.allclose(mt.sum(1), torch.ones(n))
    assert torch.equal(mv, valid | valid[perm])
    assert torch.allclose(mw, lam * weights + (1 - lam) * weights[perm])
    for i in range(n):  # a face without a map contributes no map
        expected = lam * maps[i] * valid[i] + (1 - lam) * maps[perm[i]] * valid[perm[i]]
        assert torch.allclose(mm[i], expected)


def test_ema_weights_differ_from_the_raw_ones_and_are_the_ones_kept(tmp_path, small_splits, small_cache):
    cfg = FitConfig(epochs=1, batch_size=32, seed=1, ema_decay=0.9)
    result = fit(tmp_path / "ema", cfg, model_cfg=TINY, device="cpu", progress=False, splits=small_splits,
                 cache=small_cache)
    last = read_checkpoint(tmp_path / "ema" / "last.pt")
    best = read_checkpoint(tmp_path / "ema" / "best.pt")  # what `train package` and the export take
    conv = "stem.0.0.weight"
    assert not torch.allclose(last["model"][conv], last["ema"][conv])  # EMA is not the raw weights
    for key, value in best["model"].items():
        assert torch.equal(value, last["ema"][key]), key
    record = result["history"][0]
    assert "val_accuracy_raw" in record and "val_accuracy" in record
    from stream_fer.train.ablation import markdown, run_row

    row = run_row(tmp_path / "ema")  # the model card's ablation table reads the same history
    assert row["val_accuracy"] == record["val_accuracy"] and row["val_accuracy_raw"] == record["val_accuracy_raw"]
    assert "EMA 0.9" in markdown([row])


def test_resume_restores_the_ema(tmp_path, small_splits, small_cache):
    cfg = FitConfig(epochs=2, batch_size=32, seed=1, ema_decay=0.9)
    kwargs = dict(model_cfg=TINY, device="cpu", progress=False, splits=small_splits, cache=small_cache)
    fit(tmp_path / "straight", cfg, **kwargs)
    fit(tmp_path / "resumed", cfg, max_epochs_this_call=1, **kwargs)
    fit(tmp_path / "resumed", cfg, **kwargs)
    a = read_checkpoint(tmp_path / "straight" / "last.pt")["ema"]
    b = read_checkpoint(tmp_path / "resumed" / "last.pt")["ema"]
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key


def test_loss_falls_with_mixup_nnldl_and_a_teacher(tmp_path, small_splits, small_cache):
    torch.manual_seed(0)
    teacher = build_model(TINY)
    teacher_path = save_checkpoint(tmp_path / "teacher.pt", teacher)
    cfg = FitConfig(epochs=4, batch_size=32, seed=1, mixup=0.2, nnldl_k=5, distill_from=str(teacher_path),
                    distill_weight=0.5)
    result = fit(tmp_path / "levers", cfg, model_cfg=TINY, device="cpu", progress=False, splits=small_splits,
                 cache=small_cache)
    losses = [h["loss"] for h in result["history"]]
    assert losses[-1] < losses[0]


def test_a_training_map_with_a_nan_pixel_counts_as_no_map():
    from stream_fer.train.au_targets import _finite

    maps = np.ones((3, 4, 4), dtype=np.float16)
    maps[1, 2, 2] = np.nan
    fixed, valid = _finite(maps, np.array([True, True, False]))
    assert valid.tolist() == [True, False, False]
    assert np.isfinite(fixed).all() and fixed[0].sum() == 16


def test_cached_teacher_logits_are_the_teachers_on_the_unaugmented_faces_and_are_reused(tmp_path, small_splits,
                                                                                         small_cache):
    from stream_fer.train.fit import Teacher, TrainingData, cached_teacher_logits
    from stream_fer.train.au_targets import split_maps
    from stream_fer.train.model import normalise

    torch.manual_seed(0)
    teacher = build_model(TINY).eval()
    teacher_path = save_checkpoint(tmp_path / "teacher.pt", teacher)
    cfg = FitConfig(epochs=3, batch_size=32, seed=1, distill_from=str(teacher_path), distill_cached=True)
    result = fit(tmp_path / "cached", cfg, model_cfg=TINY, device="cpu", progress=False, splits=small_splits,
                 cache=small_cache)
    losses = [h["loss"] for h in result["history"]]
    assert losses[-1] < losses[0]
    (stored,) = (tmp_path / "cached").glob("teacher_logits-*.npy")
    maps, valid = split_maps(small_splits["train"], small_cache)
    images = TrainingData(small_splits["train"], maps, valid, cfg).images
    with torch.no_grad():
        expected = teacher(normalise(images[:40], TINY))[0]
    logits = torch.from_numpy(np.load(stored))
    assert logits.shape == (len(images), 7)
    assert torch.allclose(logits[:40], expected, atol=1e-4)
    # a resumed run reads them back instead of running the teacher again
    np.save(stored, np.zeros_like(np.load(stored)))
    again = cached_teacher_logits(tmp_path / "cached", Teacher(str(teacher_path), "cpu"), images, torch.device("cpu"))
    assert float(again.abs().sum()) == 0.0


def test_cached_teacher_refuses_mixup(tmp_path, small_splits, small_cache):
    from stream_fer.errors import StreamFerError

    teacher_path = save_checkpoint(tmp_path / "teacher.pt", build_model(TINY))
    cfg = FitConfig(epochs=1, batch_size=32, mixup=0.2, distill_from=str(teacher_path), distill_cached=True)
    with pytest.raises(StreamFerError, match="mixup"):
        fit(tmp_path / "run", cfg, model_cfg=TINY, device="cpu", progress=False, splits=small_splits,
            cache=small_cache)


def test_sharpened_vote_distributions_keep_the_majority_and_move_mass_to_it(small_splits, small_cache):
    from stream_fer.train.au_targets import split_maps
    from stream_fer.train.fit import TrainingData, sharpened

    d = np.array([[0.6, 0.3, 0.1], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(sharpened(d, 2), [[0.36 / 0.46, 0.09 / 0.46, 0.01 / 0.46], [0.5, 0.5, 0.0]], atol=1e-6)
    np.testing.assert_allclose(sharpened(d, 1), d, atol=1e-6)
    split = small_splits["train"]
    maps, valid = split_maps(split, small_cache)
    plain = TrainingData(split, maps, valid, FitConfig()).targets.numpy()
    sharp = TrainingData(split, maps, valid, FitConfig(target_power=2)).targets.numpy()
    np.testing.assert_allclose(sharp.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(sharp.argmax(axis=1), plain.argmax(axis=1))
    assert (sharp.max(axis=1) >= plain.max(axis=1) - 1e-6).all() and (sharp.max(axis=1) > plain.max(axis=1)).any()
