"""Command line: `python -m lab train|runs|show|cancel|resume|eval|report|experiment ...`.

Every command prints a clear one-paragraph message and exits non-zero on bad input; no
traceback is the only output.
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

from lab import limits
from lab.config import PRESETS, RunConfig, load_config_file, preset_title, settings_help
from lab.errors import LabError


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file of settings (flags override it)")
    p.add_argument("--preset", choices=list(PRESETS), metavar="ID",
                   help="start from a preset: " + "; ".join(f"{k} = {preset_title(k)}" for k in PRESETS))
    for name, h in settings_help(RunConfig).items():
        if name == "params":
            continue
        default = h["default"]
        shown = "none" if default in ([], "") else repr(default)
        p.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                       help=f"{h['help']} (default {shown})".replace("%", "%%"))
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="objective setting, e.g. --param n_ahead=8 (repeatable); "
                        "`python -m lab settings` lists every objective's settings")
    p.add_argument("--detach", action="store_true", help="print the run id and return at once")
    g = p.add_argument_group("several machines (prints commands, starts nothing)")
    g.add_argument("--print-launch", action="store_true",
                   help="create the run and print each machine's `accelerate launch` line and a "
                        "Slurm sbatch script, for a data folder all machines share")
    g.add_argument("--num-machines", type=limits.int_in(1, 1024), default=2, help="machines (default 2)")
    g.add_argument("--main-process-ip", default="127.0.0.1",
                   help="address of machine 0 as the others see it (default 127.0.0.1)")
    g.add_argument("--main-process-port", type=limits.int_in(1, 65535), default=29500,
                   help="rendezvous port on machine 0 (default 29500)")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    values: dict[str, Any] = {}
    if args.preset:
        values.update(PRESETS[args.preset])
    if args.config:
        values.update(load_config_file(args.config))
    for f in dataclasses.fields(RunConfig):
        v = getattr(args, f.name, None)
        if v is not None and f.name != "params":
            values[f.name] = v
    params = values.get("params") or {}
    if not isinstance(params, dict):
        raise LabError(f"params must be a mapping of objective settings, e.g. {{n_ahead: 8}} "
                       f"(got {limits.short(params)}).")
    params = dict(params)
    for item in args.param:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise LabError(f"--param {item!r}: use KEY=VALUE, e.g. --param n_ahead=8")
        params[key.strip()] = _parse_value(raw)
    values["params"] = params
    return RunConfig.from_dict(values)


def _parse_value(raw: str) -> Any:
    import yaml
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def cmd_demo(args: argparse.Namespace) -> int:
    from lab.demo import ensure_demo
    print(ensure_demo(args.data_dir), flush=True)
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from lab.config import settings_table
    print(settings_table(), end="")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from jobs.manager import submit
    cfg = config_from_args(args)
    command = shlex.join(["python", "-m", "lab"] + sys.argv[1:]) if sys.argv[1:] else None
    if args.print_launch:
        from jobs.multinode import export_multinode
        launch = export_multinode(cfg, args.data_dir, machines=args.num_machines, command=command,
                                  main_ip=args.main_process_ip, port=args.main_process_port)
        print(launch.text(), flush=True)
        return 0
    run_id = submit(cfg, args.data_dir, command=command)
    print(run_id, flush=True)
    if args.detach:
        return 0
    return follow(run_id, args.data_dir)


def follow(run_id: str, data_dir: str) -> int:
    """Show a progress bar until the run ends; Ctrl-C detaches (the job keeps running)."""
    from jobs.manager import reap
    from lab.progress import Progress
    from lab.store import ACTIVE, Store
    store = Store(data_dir)
    bar = None
    try:
        while True:
            reap(data_dir)
            run = store.require_run(run_id)
            total = int(run.get("max_steps") or 1)
            if run["status"] == "running":
                bar = bar or Progress(f"run {run_id}", total=total)
                bar.update(int(run.get("step") or 0), "")
            if run["status"] not in ACTIVE:
                break
            time.sleep(1.0)
    except KeyboardInterrupt:
        print(f"\nDetached; the job goes on. Watch it with `python -m lab show {run_id}`.")
        return 130
    if bar:
        bar.update(int(run.get("step") or 0))
        sys.stderr.write("\n")
    if run["status"] == "finished":
        print(f"run {run_id} finished: {run.get('step')} steps. Rows are in {store.path}.")
        return 0
    print(f"run {run_id} {run['status']}: {terminal_text(run.get('error') or '', keep_lines=True)}".rstrip(),
          file=sys.stderr)
    return 1


def terminal_text(value: Any, keep_lines: bool = False) -> str:
    """User text (names, errors, logs) made safe to print: control and format characters
    (escape sequences, carriage returns, bells, bidi overrides, line separators) are shown
    escaped, so the terminal executes nothing and a one-line listing stays one line."""
    out = []
    for ch in str(value):
        if keep_lines and ch in "\n\t":
            out.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def cmd_runs(args: argparse.Namespace) -> int:
    from jobs.manager import reap
    from jobs.queue import queue_positions
    from lab.store import Store
    reap(args.data_dir)
    df = Store(args.data_dir).list_runs(kind=None if args.all else "train")
    if df.empty:
        print("no runs yet")
        return 0
    places = queue_positions(Store(args.data_dir))
    for r in df.to_dict("records"):
        name, objective = terminal_text(r["name"] or "-")[:28], terminal_text(r["objective"])
        place = f"  {places[r['id']].text}" if r["id"] in places else ""
        print(f"{terminal_text(r['id'])}  {name:<28}  {objective:<10}  {r['status']:<9}  "
              f"step {int(r['step'] or 0)}/{int(r['max_steps'] or 0)}{place}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from jobs.manager import read_log_tail, reap
    from jobs.queue import queue_positions
    from lab.store import Store
    reap(args.data_dir)
    store = Store(args.data_dir)
    run = store.require_run(args.run_id)
    for k in ("id", "name", "objective", "model", "corpus", "status", "step", "max_steps",
              "device", "created_at", "started_at", "finished_at", "git_commit", "command", "error"):
        print(f"{k:>12}: {terminal_text(run.get(k), keep_lines=k == 'error')}")
    place = queue_positions(store).get(args.run_id)
    if place or run.get("slurm_job"):
        print(f"{'queue':>12}: {place.text if place else 'Slurm job ' + str(run['slurm_job'])}")
    print("--- log tail ---")
    print(terminal_text(read_log_tail(run.get("log_path"), args.lines), keep_lines=True))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from jobs.manager import cancel
    ok = cancel(args.run_id, args.data_dir)
    print(f"cancelling {args.run_id}" if ok else f"run {args.run_id} is not queued or running")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from jobs.manager import resume
    run_id = resume(args.run_id, args.data_dir)
    print(run_id, flush=True)
    return 0 if args.detach else follow(run_id, args.data_dir)


def cmd_eval(args: argparse.Namespace) -> int:
    from lab.evaluation import cli_main
    from lab.store import Store
    return cli_main(args, Store(args.data_dir))


def cmd_report(args: argparse.Namespace) -> int:
    from lab import report
    from lab.store import Store
    store = Store(args.data_dir)
    build = report.experiment_report_html if args.id.startswith("exp-") else report.run_report_html
    html = build(store, args.id, stream=sys.stderr)
    out = Path(args.out or report.report_file_name("experiment" if args.id.startswith("exp-") else "run",
                                                   args.id))
    try:
        out.write_text(html, encoding="utf-8")
    except OSError as e:
        raise LabError(f"Cannot write the report to {out}: {e.strerror or e}.") from e
    print(out, flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m lab", description="ThoughtLab command line")
    sub = ap.add_subparsers(dest="command", required=True)

    def add(name: str, fn, help_text: str, writes: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--data-dir", default="data", help="folder of lab.duckdb and run files")
        p.set_defaults(fn=fn, writes=writes)   # commands that only read work in a read-only folder
        return p

    _add_train_args(add("train", cmd_train, "launch a training job (waits unless --detach)"))
    add("runs", cmd_runs, "list runs", writes=False).add_argument("--all", action="store_true",
                                                                  help="include eval jobs")
    p = add("show", cmd_show, "show one run and its log tail", writes=False)
    p.add_argument("run_id")
    p.add_argument("--lines", type=limits.int_in(1, limits.MAX_LOG_LINES), default=20,
                   help=f"log lines to show (1 to {limits.MAX_LOG_LINES:,}, default 20)")
    add("demo", cmd_demo, "make (once) a finished example experiment in the data folder, for `make demo`")
    add("settings", cmd_settings, "print every training setting with its help (the README's table)",
        writes=False)
    add("cancel", cmd_cancel, "cancel a queued or running job").add_argument("run_id")
    p = add("resume", cmd_resume, "resume a stopped run from its last checkpoint")
    p.add_argument("run_id")
    p.add_argument("--detach", action="store_true")
    p = add("report", cmd_report, "write a self-contained HTML report of a run or an experiment",
            writes=False)
    p.add_argument("id", help="a run id, or an experiment id (exp-...)")
    p.add_argument("--out", help="file to write (default thoughtlab-<kind>-<id>.html here)")
    from lab.experiments.cli import add_cli as add_experiment_cli, main as experiment_main
    add_experiment_cli(add("experiment", lambda a: experiment_main(a),
                           "run, follow and report experiments from a spec file (YAML)"))
    p = add("eval", cmd_eval, "evaluate a model or run on a benchmark")
    try:
        from lab.evaluation import add_cli_args
        add_cli_args(p)
    except ImportError:
        pass
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from lab.store import Store
        store = Store(args.data_dir)          # the data folder, checked once before any work
        if args.writes and not getattr(args, "compare", None):   # eval --compare only reads
            store.require_writable()
        return args.fn(args)
    except LabError as e:
        print(f"error: {terminal_text(e, keep_lines=True)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
