"""Shared test data: scikit-learn's bundled digits (nothing is downloaded)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def digits():
    """(X, y): 1,797 8x8 digit images scaled to [0, 1], as float32 / int64 tensors."""
    torch = pytest.importorskip("torch")
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


@pytest.fixture()
def healthy(tmp_path):
    """A log dir with one good run (`reading_helpers.write_good_run`) beside whatever a test adds."""
    from reading_helpers import write_good_run

    write_good_run(tmp_path)
    return tmp_path
