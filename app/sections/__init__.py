"""The parts of a run's page, top to bottom: `header`, `findings`, `charts`."""
