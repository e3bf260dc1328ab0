"""`app.serve.local_dashboard`: a real `streamlit run` that answers, and a clear error with the
server's output when it does not, with no server left behind either way."""

from __future__ import annotations

import urllib.request

import pytest

from trainscope.app.serve import DashboardDidNotStart, local_dashboard
from trainscope.sample_runs import RUNS_DIR


def test_the_dashboard_answers_and_is_stopped_afterwards(tmp_path):
    with (
        local_dashboard(RUNS_DIR, tmp_path / "server.log") as url,
        urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as answer,
    ):
        assert answer.status == 200
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)


def test_a_server_that_does_not_answer_in_time_is_an_error_with_its_output(tmp_path):
    with (
        pytest.raises(DashboardDidNotStart, match="streamlit did not start"),
        local_dashboard(RUNS_DIR, tmp_path / "server.log", timeout=0.0),
    ):
        pytest.fail("yielded a URL that never answered")
