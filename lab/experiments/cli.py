"""`python -m lab experiment run|status|report|list|cancel|resume|presets`.

    python -m lab experiment run SPEC.yaml          # or --preset quick-cpu; follows with one
                                                    # progress bar (Ctrl-C detaches; --detach)
    python -m lab experiment status EXP_ID          # jobs, states, progress, ETA, the summary
    python -m lab experiment report EXP_ID --out report.html
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time

from lab.cli import terminal_text as safe
from lab.errors import LabError
from lab.progress import Progress

POLL_S = 2.0


def add_cli(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_parser = sub.add_parser

    def add(name: str, **kw) -> argparse.ArgumentParser:   # --data-dir before or after ACTION
        p = add_parser(name, **kw)
        p.add_argument("--data-dir", default=argparse.SUPPRESS, help="folder of lab.duckdb and run files")
        return p
    sub.add_parser = add                                     # type: ignore[method-assign]
    p = sub.add_parser("run", help="launch an experiment from a spec file (or a preset) and follow it")
    p.add_argument("spec", nargs="?", help="the experiment spec (YAML)")
    p.add_argument("--preset", help="a preset spec instead of a file (see `experiment presets`)")
    p.add_argument("--title", help="a title for this experiment (overrides the spec's)")
    p.add_argument("--detach", action="store_true", help="print the experiment id and return at once")
    for name, text in (("status", "jobs, states, progress and ETA, and the summary so far"),
                       ("cancel", "stop the experiment: every queued or running job"),
                       ("resume", "start the experiment's driver again if it stopped early")):
        sub.add_parser(name, help=text).add_argument("id", help="experiment id (exp-...)")
    p = sub.add_parser("report", help="write the experiment's self-contained HTML report")
    p.add_argument("id", help="experiment id (exp-...)")
    p.add_argument("--out", help="file to write (default thoughtlab-experiment-<id>.html here)")
    sub.add_parser("list", help="every experiment, newest first")
    p = sub.add_parser("presets", help="list the preset specs, or print one (to copy and edit)")
    p.add_argument("id", nargs="?", help="a preset id: print its YAML")


def main(args: argparse.Namespace) -> int:
    return {"run": _run, "status": _status, "report": _report, "list": _list, "cancel": _cancel,
            "resume": _resume, "presets": _presets}[args.action](args)


def _run(args: argparse.Namespace) -> int:
    from lab.experiments import launch, load_preset, load_spec
    if bool(args.spec) == bool(args.preset):
        raise LabError("Give a spec file or --preset ID (one of them), e.g. "
                       "`python -m lab experiment run --preset quick-cpu`.")
    spec = load_preset(args.preset) if args.preset else load_spec(args.spec)
    if args.title:
        spec.title = args.title
    exp = launch(spec, args.data_dir, command=shlex.join(["python", "-m", "lab"] + sys.argv[1:]))
    print(exp, flush=True)
    return 0 if args.detach else follow(exp, args.data_dir)


class _Bar(Progress):
    """The CLI bar, with the experiment's cost-weighted ETA instead of a linear one."""
    eta: float | None = None

    def eta_text(self, n: int) -> str:
        elapsed = time.monotonic() - self.start
        return f"{elapsed:.0f}s elapsed" + ("" if self.eta is None else f", ETA {self.eta:.0f}s")


def follow(exp_id: str, data_dir: str) -> int:
    """One progress bar for the whole experiment until every job has ended; Ctrl-C detaches
    (the jobs go on). Exit 0 when every job finished, 1 when some failed, 2 when the
    experiment could not start."""
    from jobs.manager import reap
    from lab.experiments import experiment_progress
    from lab.store import Store
    store = Store(data_dir)
    bar, last = _Bar(f"experiment {exp_id}", total=1000), ""
    try:
        while True:
            reap(data_dir)
            p = experiment_progress(store, exp_id)
            if p.state == "failed":
                print(f"\nexperiment {exp_id} failed: {safe(p.error, keep_lines=True)}", file=sys.stderr)
                return 2
            bar.eta = p.eta_s
            note = p.message()
            bar.update(int(p.fraction * 1000), note if note != last else "")
            last = note
            if p.state == "ended" or p.stalled:
                break
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        print(f"\nDetached; the experiment goes on. Watch it with "
              f"`python -m lab experiment status {exp_id}`.")
        return 130
    sys.stderr.write("\n")
    print(f"experiment {exp_id}: {p.message()}. Report: python -m lab experiment report {exp_id} "
          f"--out report.html")
    return 0 if not p.failed and not p.stalled else 1


def _status(args: argparse.Namespace) -> int:
    import pandas as pd

    from jobs.manager import reap
    from lab.experiments import (experiment_progress, experiment_runs, read_state, stored_spec)
    from lab.store import Store
    reap(args.data_dir)
    store = Store(args.data_dir)
    state, spec = read_state(args.data_dir, args.id), stored_spec(args.data_dir, args.id)
    jobs = experiment_runs(store, args.id)
    if not state and jobs.empty:
        raise LabError(f"No experiment {args.id!r} in {store.data_dir}. "
                       "`python -m lab experiment list` lists them.")
    p = experiment_progress(store, args.id)
    print(f"experiment {safe(args.id)}" + (f" · {safe(spec.title)}" if spec and spec.title else ""))
    if spec:
        print(f"  model {safe(spec.model)} · {len(spec.arms)} arms × {len(spec.seeds)} seeds · "
              f"pretraining {spec.pretrain.steps or 'none'} · budget {spec.branch.budget_steps} NTP "
              f"steps ({spec.branch.budget_mode})")
    if state.get("command"):
        print(f"  command: {safe(state['command'])}")
    eta = "" if p.eta_s is None or p.state != "running" else f", ETA {p.eta_s:.0f}s"
    print(f"  {p.state}: {p.fraction:.0%} done{eta} · {safe(p.message(), keep_lines=True)}")
    if not jobs.empty:
        show = jobs[["id", "kind", "arm", "seed", "benchmarks", "status", "step", "max_steps", "error"]].copy()
        show["error"] = show["error"].map(lambda e: "" if not isinstance(e, str) else e.splitlines()[0][:60])
        show["seed"] = show["seed"].map(lambda s: "" if pd.isna(s) else int(s))
        print(safe(show.to_string(index=False), keep_lines=True))
    for line in _summary_lines(store, args.id):
        print(safe(line))
    return 0


def _summary_lines(store, exp_id: str) -> list[str]:
    from lab.experiments import experiment_results
    from lab.experiments.summary import experiment_summary
    res = experiment_results(store, exp_id)
    return [] if res.empty else ["", "Summary:"] + [f"- {s}" for s in experiment_summary(store, exp_id, res)]


def _report(args: argparse.Namespace) -> int:
    from lab.cli import cmd_report              # one report command: it knows experiment ids
    return cmd_report(args)


def _list(args: argparse.Namespace) -> int:
    from lab.experiments import experiments
    from lab.store import Store
    df = experiments(Store(args.data_dir))
    if df.empty:
        print("no experiments yet")
    for r in df.to_dict("records"):
        print(f"{safe(r['id'])}  {safe(r['title'] or '-')[:40]:<40}  {safe(r['model'] or '?'):<14}  "
              f"{safe(r['state'] or '-'):<10}  "
              f"{int(r['jobs'])} jobs, {int(r['active'])} active, {int(r['failed'])} failed")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from lab.experiments import cancel
    print(f"cancelling {cancel(args.id, args.data_dir)} job(s) of {args.id}")
    return 0


def _resume(args: argparse.Namespace) -> int:
    from lab.experiments import resume
    if resume(args.id, args.data_dir):
        print(f"{args.id}: driver started again", flush=True)
        return follow(args.id, args.data_dir)
    print(f"{args.id}: nothing to resume (its driver runs, or every job was started)")
    return 0


def _presets(args: argparse.Namespace) -> int:
    from lab.experiments import load_preset, presets
    if args.id:
        load_preset(args.id)                       # a clear error for an unknown id
        print(presets()[args.id].read_text(encoding="utf-8"), end="")
        return 0
    for pid in presets():
        print(f"{pid:<14} {safe(load_preset(pid).title)}")
    return 0
