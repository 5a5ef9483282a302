"""Background jobs: submit a spec, get a detached process; status, logs, cancel, queue, resume."""
