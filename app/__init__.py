"""TrainScope's Streamlit dashboard: ``streamlit run app/main.py -- --logdir DIR``.

`main` builds the navigation; each page is a file under `views/`; the parts of a
run's page are under `sections/`, its charts listed in `catalog`; `data` holds the
cached loaders; `figures` the pure figure builders; `series` the smoothing and
thinning. It draws what the analyzers found and diagnoses nothing itself; it never
imports torch.
"""
