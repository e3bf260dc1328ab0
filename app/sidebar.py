"""The sidebar: which log dir to read, and whether to follow it live."""

from __future__ import annotations

import streamlit as st

from trainscope.app.settings import (
    INTERVAL_DEFAULT,
    INTERVAL_MAX,
    INTERVAL_MIN,
    KEY_INTERVAL,
    KEY_LIVE,
    KEY_LOGDIR,
)


def show(default_logdir: str) -> None:
    """The widgets; pages read what they were set to through `settings.current()`."""
    st.session_state.setdefault(KEY_LOGDIR, default_logdir)
    st.session_state.setdefault(KEY_INTERVAL, INTERVAL_DEFAULT)
    with st.sidebar:
        st.text_input(
            "Log dir",
            key=KEY_LOGDIR,
            bind="query-params",  # in the URL with the run: a link opens the same view in any browser
            help="The directory that holds your runs: TrainScope, TensorBoard (Lightning, Hugging Face, "
            "Keras, SummaryWriter), Lightning CSV or Hugging Face trainer_state.json logs. "
            "Press Enter to open it.",
        )
        live = st.toggle(
            "Live",
            key=KEY_LIVE,
            help="Re-read the log dir every few seconds while runs train: curves grow and findings update. "
            "Only what was appended since the last look is read.",
        )
        st.slider(
            "Refresh every (seconds)",
            min_value=INTERVAL_MIN,
            max_value=INTERVAL_MAX,
            key=KEY_INTERVAL,
            disabled=not live,
        )
        if not st.get_option("server.address"):
            # Started outside the checkout, `.streamlit/config.toml` was not read: Streamlit then
            # listens on every interface, and the logs' hyperparameters and paths are open to the network.
            st.caption(
                ":material/public: Listening on every network interface. Start it from the TrainScope "
                "checkout (`make dashboard`) or pass `--server.address localhost` to keep it local."
            )
