"""Fixtures for the engine tests: a small decisive model saved as a real checkpoint (CI has no trained
checkpoints), its FP32 and FP16 exports, and real aligned faces: 24 from the sample clip shipped in the
package (always), plus FER+ test faces and the shared stills' faces where the shared data folder is present.

The exports run the real exporter and the real ONNX Runtime; only the weights are synthetic."""

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


def _varied(faces: np.ndarray, copies: int = 3, seed: int = 0) -> np.ndarray:
    """The faces, their mirror images, and `copies` more of each as a poor aligner, the light and focus vary
    them (turned up to 25 deg, scaled 0.75-1.3, shifted up to 5 px, gamma 0.5-2, gain 0.7-1.3, half blurred)."""
    import cv2

    rng = np.random.default_rng(seed)
    size = faces.shape[1]
    out = [faces, faces[:, :, ::-1]]
    for _ in range(copies):
        for face in faces:
            m = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-25, 25), rng.uniform(0.75, 1.3))
            m[:, 2] += rng.uniform(-5, 5, 2)
            g = cv2.warpAffine(face, m, (size, size), borderMode=cv2.BORDER_REPLICATE).astype(np.float32) / 255
            g = 255 * g ** rng.uniform(0.5, 2.0) * rng.uniform(0.7, 1.3)
            if rng.random() < 0.5:
                g = cv2.GaussianBlur(g, (0, 0), rng.uniform(0.5, 1.5))
            out.append(np.clip(g, 0, 255).astype(np.uint8)[None])
    return np.ascontiguousarray(np.concatenate(out))


@pytest.fixture(scope="session")
def face_sets(sample_faces_dir, landmarker_model) -> list[np.ndarray]:
    """The real faces available here: where the shared data is present, the first 64 FER+ test faces and
    the faces of the shared stills; always, the aligned faces of every 4th frame of the shipped sample, varied
    (_varied) where they are the only ones: one person's 24 faces alone are too alike for a random model to
    tell apart decisively."""
    from stream_fer.train.export import ferplus_faces, still_faces

    sample = still_faces(sample_faces_dir)
    assert len(sample) == 24, f"expected a face in each of the 24 sample frames, got {len(sample)}"
    shared = [f for f in (ferplus_faces(64), still_faces()) if len(f)]
    return [*shared, sample] if shared else [_varied(sample)]


@pytest.fixture(scope="session")
def real_faces(face_sets) -> np.ndarray:
    """(N, 48, 48) uint8 real aligned faces (never empty: the sample clip's faces are always there)."""
    return np.concatenate(face_sets).astype(np.uint8)


@pytest.fixture(scope="session")
def check_faces(face_sets) -> np.ndarray:
    """The real faces the exports are checked on."""
    return np.concatenate(face_sets).astype(np.uint8)


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
def int8_faces(tiny_model, check_faces) -> np.ndarray:
    """The faces the INT8 export is checked on: top-two margin >= 0.1. The synthetic test model is far more
    sensitive to rounding than a trained one (INT8 keeps its class on 86% of the real faces, against 99% for
    the shipped model on FER+ validation), and every face it keeps its class on has at least this margin."""
    faces = decisive_subset(tiny_model, check_faces, margin=0.1)
    assert len(faces) >= 16, "the test model should be decisive on many faces"
    return faces


@pytest.fixture(scope="session")
def exported_int8(tiny_checkpoint, int8_faces, check_faces, tmp_path_factory):
    """The INT8 export, calibrated on the real faces (CI has no FER+ training faces to calibrate on)."""
    from stream_fer.train.export import export_checkpoint

    return export_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("export") / "int8", int8=True,
                             faces=int8_faces, calibration=check_faces)


@pytest.fixture(scope="session")
def decisive_real_faces(tiny_model, real_faces) -> np.ndarray:
    """The real faces that are not near-ties for the test model (see decisive_subset)."""
    return decisive_subset(tiny_model, real_faces)


@pytest.fixture(scope="session")
def other_checkpoint(tmp_path_factory, check_faces):
    """A second small model (another seed): the network that reads the mirror images."""
    from stream_fer.train.checkpoint import save_checkpoint

    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "other.pt", _decisive_model(check_faces, seed=1))


@pytest.fixture(scope="session")
def other_fp32(other_checkpoint, check_faces, tmp_path_factory):
    from stream_fer.train.export import export_checkpoint

    return export_checkpoint(other_checkpoint, tmp_path_factory.mktemp("other") / "fp32", check=False)


@pytest.fixture(scope="session")
def other_int8(other_checkpoint, check_faces, tmp_path_factory):
    from stream_fer.train.export import export_checkpoint

    return export_checkpoint(other_checkpoint, tmp_path_factory.mktemp("other") / "int8", int8=True, check=False,
                             calibration=check_faces)
