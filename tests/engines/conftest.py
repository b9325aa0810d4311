"""Fixtures for the engine tests: a small decisive model saved as a real checkpoint (CI has no trained
checkpoints), its FP32 and FP16 exports, and real aligned faces from the shared data folder.

The exports run the real exporter and the real ONNX Runtime; only the weights are synthetic. Where the
shared data is absent the exports are checked on synthetic images instead and the parity tests that
need real faces are skipped (they say so)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the engine tests export models, which needs the training extras")


def _decisive_model(faces: np.ndarray, seed: int = 0):
    """An untrained AUNet made to behave like a trained one where the tests look: residual branches
    switched on, and a classifier centred on these faces' mean features (bias = -W mu) and scaled up, so
    its predictions spread over the classes and FP16 argmax agreement is a real test, not a tie-break."""
    from stream_fer.train.model import build_model, normalise

    torch.manual_seed(seed)
    model = build_model().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
        pooled = model.features(normalise(torch.from_numpy(faces.copy()), model.config)).mean(dim=(2, 3))
        # weights of the size a trained model has (its CAMs reach a few tens), centred on these faces
        model.fc.weight.copy_(torch.randn_like(model.fc.weight) * 3.0)
        model.fc.bias.copy_(-model.fc.weight @ pooled.mean(0))
    return model


@pytest.fixture(scope="session")
def tiny_model(check_faces):
    return _decisive_model(check_faces)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model):
    from stream_fer.train.checkpoint import save_checkpoint

    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", tiny_model, epoch=0)


def decisive_subset(model, faces: np.ndarray, margin: float = 0.02) -> np.ndarray:
    """The faces on which `model`'s FP32 top-two probabilities differ by at least `margin`.

    FP16 rounds a logit by about 1e-3 of its size, so on a genuine near-tie FP32 and FP16 may pick
    different classes (a trained model does this on 4 of the 3573 FER+ test faces, every one with a
    top-two margin under 1e-3). The FP16 argmax test checks the export on faces that are not ties."""
    from stream_fer.train.model import normalise

    with torch.inference_mode():
        probs = torch.softmax(model(normalise(torch.from_numpy(faces.copy()), model.config))[0], 1).numpy()
    top2 = np.sort(probs, axis=1)[:, -2:]
    return faces[top2[:, 1] - top2[:, 0] >= margin]


@pytest.fixture(scope="session")
def face_sets() -> list[np.ndarray]:
    """The real faces available here: the first 64 FER+ test faces, the aligned faces of the video
    stills; either may be empty."""
    from stream_fer.train.export import ferplus_faces, still_faces

    return [f for f in (ferplus_faces(64), still_faces()) if len(f)]


@pytest.fixture(scope="session")
def real_faces(face_sets) -> np.ndarray:
    """(N, 48, 48) uint8 real aligned faces; skips the test where there are none."""
    if not face_sets:
        pytest.skip("no real faces: FER+ and shared/videos/stills not found (set STREAM_FER_SHARED)")
    return np.concatenate(face_sets).astype(np.uint8)


@pytest.fixture(scope="session")
def check_faces(face_sets) -> np.ndarray:
    """Real faces when available, else a deterministic synthetic set (so CI still exports and checks)."""
    if face_sets:
        return np.concatenate(face_sets).astype(np.uint8)
    return np.random.default_rng(0).integers(0, 256, size=(32, 48, 48), dtype=np.uint8)


@pytest.fixture(scope="session")
def export_faces(tiny_model, check_faces) -> np.ndarray:
    faces = decisive_subset(tiny_model, check_faces)
    assert len(faces) >= 16, "the test model should be decisive on most faces"
    return faces


@pytest.fixture(scope="session")
def exported_fp32(tiny_checkpoint, export_faces, tmp_path_factory):
    from stream_fer.train.export import export_checkpoint

    return export_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("export") / "fp32", faces=export_faces)


@pytest.fixture(scope="session")
def exported_fp16(tiny_checkpoint, export_faces, tmp_path_factory):
    from stream_fer.train.export import export_checkpoint

    return export_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("export") / "fp16", fp16=True,
                             faces=export_faces)


@pytest.fixture(scope="session")
def decisive_real_faces(tiny_model, real_faces) -> np.ndarray:
    """The real faces that are not near-ties for the test model (see decisive_subset)."""
    return decisive_subset(tiny_model, real_faces)
