"""`make bench-gpu`: every GPU figure of docs/BENCHMARKS.md from one resumable command.

    python -m bench.gpu [--section NAME] [--force] [--data-dir DIR] [--pack FILE.tar.gz]
    python -m bench.gpu --smoke [--work DIR]      # the same code paths in miniature, on a CPU
    python -m bench.gpu --plan                    # sections, estimates, which are done
    python -m bench.gpu --calls                   # the device calls that run it (docs/BENCHMARKS.md, "GPU runs")

Sections run in order (`ORDER`): teachers, steptime, loader, jobs, teacher-large, step, one search
per budget and sampler (2M first), ablation. Each writes ``docs/results/gpu_<name>.json`` and its section
of docs/BENCHMARKS.md (rendered from the JSON, so ``--render`` rewrites the markdown alone); a
section whose JSON exists is skipped unless ``--force``. A GPU session here has 15 minutes of
device time: the machine's start and one call of at most 10 minutes. So the command keeps its own
clock (``--call-seconds``): it starts a section only if the section's estimate fits in what is
left, and otherwise leaves it for the next call and goes on to the next section that fits. The searches and the ablation are
resumable inside a section: a search stops starting trials at the call's end and its study
(``.bench-gpu/runs/<study>/study.db``) resumes next call; each ablation run is kept as it
finishes. That state goes into ``docs/results/gpu-state.tar.gz`` (`save_state`), which is
committed and so reaches the next GPU session, where the run unpacks it first (`restore_state`).
``--pack`` writes the results, the markdown and that archive into one tar.gz for the call to
bring back (extract it in the repository root), after every finished section, every piece a
section keeps (`Config.checkpoint`: a step part, a jobs row, an ablation run) and at the end.

Everything runs inside a work folder (``.bench-gpu/``; ``--smoke``: ``.bench-gpu-smoke/``). The
smoke run writes its JSON, markdown and state archive there too, never into docs/.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import shlex
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from bench._report import hardware, write_section
from bench.gpu_choice import DEFAULT, Setup, choose, rows_in
from bench.gpu_sizes import GPU, SMOKE, JobsRun, Sizes, waves
from nas_kd.errors import one_line

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench-gpu"
SMOKE_WORK = ROOT / ".bench-gpu-smoke"
CALL_SECONDS = 540.0  # of a 600 s device call: the rest is the machine's pip install and the pack
MIN_SLICE = 120.0  # a resumable section starts only with this much of the call left
WHEELS_PIP = "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl"
WHEELS_DONE = "/tmp/site/.nas-kd-wheels"  # written after the install: a warm machine's second call skips it

__all__ = ["Config", "Section", "sections", "run_sections", "main"]


@dataclass(frozen=True)
class Config:
    """One invocation: sizes (GPU or smoke), where results and state go, the call's deadline."""

    sizes: Sizes
    device: torch.device
    data_dir: str | None
    results: Path  # gpu_<section>.json files
    markdown: Path  # the BENCHMARKS.md the sections are written into
    work: Path  # working folder: runs/ (teachers, studies) and per-run caches live here
    deadline: float  # time.monotonic() by which this call's work must end
    argv: tuple[str, ...]
    # Called by a section each time it keeps a piece (a step part, a jobs row, an ablation run):
    # main packs then, so that a call the device's limit kills (no `finally` runs) still brings
    # back every piece finished before, not only the sections finished before.
    checkpoint: Callable[[], None] = lambda: None

    @property
    def smoke(self) -> bool:
        return self.sizes.smoke

    def left(self) -> float:
        return self.deadline - time.monotonic()


@dataclass(frozen=True)
class Section:
    name: str
    estimate_s: float  # H100 seconds, estimated until a GPU run records the real figure
    run: Callable[[Config], dict | None]  # JSON-ready result; None: cut short, resume next call
    render: Callable[[Config], tuple[str, str]]  # (markdown section name, body) from the JSON on disk
    resumable: bool = False  # may start with less than its estimate left (see MIN_SLICE)
    # Whether a recorded result still covers what the section now measures (the jobs section:
    # every --jobs value); one that no longer does runs again and resumes from its kept state.
    covers: Callable[[dict], bool] = lambda result: True
    # What is left of it given the kept state (`Kept`: the state archive's members), as the whole
    # pieces a call must hold (a part, a row, a wave of runs; seconds each): a resumable section
    # that kept part of its work is that much shorter (None: the whole estimate, one piece).
    units_left: Callable[[Kept], list[float]] | None = None

    def left(self, kept: Kept) -> list[float]:
        return [self.estimate_s] if self.units_left is None else self.units_left(kept)


# What a GPU session (one call) gets first: the quick answers to "how fast" (teachers, step time
# per mode, the loader), then --jobs (its rows left after 2026-12-04: the search as it trains now,
# crop-free, at --jobs 4, with the CUDA-graph step and at --jobs 8, ~450 s), then the larger
# teacher with a recipe of its own (the teachers section's shared recipe left it short of its
# goal; ~110 s, a criterion's figure, so it runs in the short second call a session leaves after
# jobs rather than waiting for the whole of step), then where the step goes and what each switch
# is worth (the first GPU call found the step host-bound: this section says what pays; kept part by
# part), then the searches (resumable across calls and sessions through the state archive, at the
# setup the jobs rows chose), the ablation last.
ORDER = ("teachers", "steptime", "loader", "jobs", "teacher-large", "step", "searches", "ablation")


def sections(sizes: Sizes, setup: Setup = DEFAULT) -> list[Section]:
    """The sections in `ORDER`; the searches' and the ablation's estimates at ``setup`` (the
    jobs section's fastest safe row, `bench.gpu_choice`), which is how they will train."""
    from bench import gpu_sections as s
    from nas_kd.finalize import FINAL_DIR, RUNS_DIR

    fixed = {
        "teachers": Section("teachers", sizes.estimates["teachers"], s.teachers, s.own_markdown("teachers")),
        "teacher-large": Section("teacher-large", sizes.estimates["teacher-large"], s.large_teacher, s.own_markdown("teacher-large")),
        "loader": Section("loader", sizes.estimates["loader"], s.loader, s.own_markdown("loader")),
        "step": Section("step", sum(sec for _, sec in sizes.step.part_seconds), s.step, s.own_markdown("step"), resumable=True,
                        units_left=lambda kept: [sec for part, sec in sizes.step.part_seconds if f"{s.STEP_DIR}/{part}.json" not in kept]),
        "steptime": Section("steptime", sizes.estimates["steptime"], s.steptime, s.own_markdown("steptime")),
        "jobs": Section("jobs", sum(sizes.jobs_estimate(r.jobs) for r in sizes.jobs_runs()), s.jobs, s.own_markdown("jobs"), resumable=True,
                        covers=lambda result: {r.key() for r in sizes.jobs_runs()} <= {JobsRun.of_row(row).key() for row in result["rows"]},
                        units_left=lambda kept: [sizes.jobs_estimate(r.jobs) for r in sizes.jobs_runs() if f"{s.JOBS_DIR}/{r.key()}.json" not in kept]),
        # The estimate at the setup: the sizes' (a whole plan of waves) scaled by the run's.
        "ablation": Section("ablation", sizes.estimates["ablation"] * setup.ablation_run_s(sizes) / sizes.ablation_run_s, s.ablation, s.own_markdown("ablation"), resumable=True,
                            units_left=lambda kept: waves(sizes.ablation_runs() - len(kept.under(s.ABLATION_DIR, ".json", but=s.ABLATION_TIMING)), sizes.ablation_jobs, setup.ablation_run_s(sizes))),
    }
    # Per budget, the first sampler trains the baselines the others share: it comes first.
    def search_left(budget: str, sampler: str) -> Callable[[Kept], list[float]]:
        # The trials its kept study still lacks, and the finish runs (re-screen, retrain) it has not kept.
        def left(kept: Kept) -> list[float]:
            study = s.search_study(sizes, budget, sampler)
            done = kept.finished_trials(f"runs/{study}/study.db", searches_teacher_sha256(sizes))
            trials_s, trial_s = setup.trials_s(sizes) * max(0, sizes.trials - done) / sizes.trials, setup.trial_piece_s(sizes)
            runs = sizes.finish_runs(sampler == sizes.samplers[0]) - len(kept.under(f"runs/{study}/{FINAL_DIR}/{RUNS_DIR}", ".pt"))
            return [trial_s] * int(trials_s // trial_s) + [trials_s % trial_s] * (trials_s % trial_s > 0) + waves(runs, setup.processes(sizes), setup.full_run_s(sizes))

        return left

    searches = [
        Section(s.search_name(budget, sampler), sum(search_left(budget, sampler)(NOTHING_KEPT)), s.search(budget, sampler), s.search_markdown, resumable=True, units_left=search_left(budget, sampler))
        for budget in sizes.budgets
        for sampler in sizes.samplers
    ]
    return [sec for name in ORDER for sec in (searches if name == "searches" else [fixed[name]])]


def calls_for(pieces: list[float], call_s: float) -> int:
    """Calls of ``call_s`` usable seconds that hold ``pieces`` in order, each whole (a piece that
    does not fit what is left of a call waits for the next)."""
    calls, room = 0, 0.0
    for piece in pieces:
        if piece > room:
            calls, room = calls + 1, call_s
        room -= piece
    return calls


def result_path(cfg: Config, name: str) -> Path:
    return cfg.results / f"gpu_{name}.json"


def recorded(cfg: Config, sec: Section) -> dict | None:
    """The section's JSON record if it is done: written, and covering what the section measures now."""
    path = result_path(cfg, sec.name)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if sec.covers(record["result"]) else None


def run_sections(cfg: Config, todo: list[Section], *, force: bool, log=print, after: Callable[[], None] = lambda: None) -> bool:
    """Run what is not done yet, in order, within the call; True when every section is done.
    A section without time left is skipped for the next call and a later, shorter one may still
    run: a GPU call is too rare to end early. ``after`` runs after each finished section (the
    pack: a call killed later keeps it)."""
    complete = True
    for sec in todo:
        path = result_path(cfg, sec.name)
        if recorded(cfg, sec) is not None and not force:
            log(f"bench-gpu: {sec.name}: done ({path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}); FORCE=1 redoes it")
            continue
        left = cfg.left()
        if left < (min(MIN_SLICE, sec.estimate_s) if sec.resumable else sec.estimate_s):
            log(f"bench-gpu: no time for {sec.name} in this call (about {sec.estimate_s:.0f} s; {left:.0f} s left): left for the next call")
            complete = False
            continue
        log(f"bench-gpu: {sec.name} (estimated {sec.estimate_s:.0f} s{'' if cfg.smoke else ' on the GPU'}; {left:.0f} s left in this call)")
        t0 = time.perf_counter()
        try:
            result = sec.run(cfg)
        except Exception as exc:  # KeyboardInterrupt still ends the call (the pack runs in main's finally)
            # A bug in one section (a CUDA error, an API this torch lacks) must not cost the call's
            # other sections: record it for the next session to fix, free the device, go on.
            record_failure(cfg, sec.name, exc, log)
            complete = False
            continue
        if result is None:
            log(f"bench-gpu: {sec.name} cut short at the end of this call: run the same command again to resume it")
            complete = False
            continue
        record = {"section": sec.name, "seconds": time.perf_counter() - t0, "estimate_seconds": sec.estimate_s, "date": dt.date.today().isoformat(), "hardware": hardware(), "smoke": cfg.smoke, "command": shlex.join(["python", "-m", "bench.gpu", *cfg.argv]), "result": result}
        cfg.results.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1, default=str) + "\n")
        write_section(*sec.render(cfg), path=cfg.markdown)
        log(f"bench-gpu: {sec.name} done in {record['seconds']:.0f} s")
        after()
    return complete


FAILURES = "failures.log"  # in the work folder; packed, so the call brings it back


def record_failure(cfg: Config, name: str, exc: BaseException, log=print) -> None:
    """One line to the log, the whole traceback to stderr and to `FAILURES` (appended: a call may
    hold several), and the device's cached memory freed for the sections that follow."""
    trace = "".join(traceback.format_exception(exc))
    log(f"bench-gpu: {name} FAILED ({one_line(exc)}); the next sections still run, traceback in {FAILURES}")
    print(trace, file=sys.stderr, flush=True)
    try:
        where = hardware()
    except Exception:  # a sticky CUDA error can make even the device's name unreadable
        where = "device unreadable after the failure"
    cfg.work.mkdir(parents=True, exist_ok=True)
    with open(cfg.work / FAILURES, "a") as f:
        f.write(f"# {dt.datetime.now().isoformat(timespec='seconds')} section {name} ({where})\n{trace}\n")
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass  # the context is lost: the next sections will fail and be recorded the same way


def render_all(cfg: Config, todo: list[Section]) -> None:
    for sec in todo:
        if result_path(cfg, sec.name).is_file():
            write_section(*sec.render(cfg), path=cfg.markdown)


@dataclass(frozen=True)
class Kept:
    """What the state archive holds: its member names (``"jobs/4.json" in kept``) and, for a
    search, how many trials its kept study has finished."""

    names: frozenset[str]
    archive: Path | None

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def under(self, folder: str, suffix: str, but: str | None = None) -> list[str]:
        """The kept files directly in ``folder`` ending in ``suffix`` (less the one named ``but``)."""
        return [n for n in self.names if n.rpartition("/")[0] == folder and n.endswith(suffix) and n.rpartition("/")[2] != but]

    def jobs_rows(self) -> list[dict]:
        """The jobs section's kept rows (`bench.gpu_choice.rows_in` of the archive's jobs/)."""
        from bench.gpu_sections import JOBS_DIR

        names = self.under(JOBS_DIR, ".json")
        if self.archive is None or not names:
            return []
        with self._extracted(names) as tmp:
            return rows_in(tmp / JOBS_DIR)

    def finished_trials(self, study_db: str, teacher_sha256: str | None = None) -> int:
        """Trials that count towards the target (`nas_kd.study.finished_trials`) in the kept
        study at ``study_db`` (a member name), 0 without one, or when the section would start it
        over (`start_over_if_changed`): its brief schedule is no longer its preset's, or it
        distilled from another teacher than ``teacher_sha256`` (None: not known here)."""
        if self.archive is None or study_db not in self.names:
            return 0
        import optuna

        from nas_kd.study import finished_trials

        with self._extracted([study_db]) as tmp:
            storage = f"sqlite:///{tmp / study_db}"
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            studies = [optuna.load_study(study_name=name, storage=storage) for name in optuna.get_all_study_names(storage)]
            return sum(len(finished_trials(st.get_trials(deepcopy=False))) for st in studies if not _started_over(st, teacher_sha256))

    @contextlib.contextmanager
    def _extracted(self, names: list[str]) -> Iterator[Path]:
        """A temporary folder holding the archive's members ``names`` at their paths."""
        with tempfile.TemporaryDirectory() as tmp, tarfile.open(self.archive) as tar:
            for name in names:
                tar.extract(name, tmp, filter="data")
            yield Path(tmp)


NOTHING_KEPT = Kept(frozenset(), None)


def _started_over(study, teacher_sha256: str | None) -> bool:
    """Whether a bench search study was made with another brief schedule than its preset has now
    (`SearchPlan.schedule_changes`; the searches pass no --brief: a difference is a change of the
    preset) or with another teacher file than ``teacher_sha256`` (a shipped teacher replaced since).
    A study without a readable plan counts as it is."""
    from nas_kd.errors import UserError
    from nas_kd.plan import plan_of

    try:
        plan = plan_of(study)
    except UserError:
        return False
    other_teacher = None not in (teacher_sha256, plan.teacher.sha256) and plan.teacher.sha256 != teacher_sha256
    return "brief" in plan.schedule_changes() or other_teacher


def searches_teacher_sha256(sizes: Sizes) -> str | None:
    """The SHA-256 of the teacher the search sections distil from, where known without training
    one: the shipped teacher's (a smoke run trains its own)."""
    from nas_kd.models.shipped import shipped_teacher

    entry = shipped_teacher(sizes.dataset) if sizes.distil_from_shipped else None
    return entry.sha256 if entry else None


def kept_state(cfg: Config) -> Kept:
    """The state archive's contents (paths relative to the work folder), empty without one."""
    archive = cfg.results / STATE
    if not archive.is_file():
        return Kept(frozenset(), None)
    with tarfile.open(archive) as tar:
        return Kept(frozenset(tar.getnames()), archive)


def plan_lines(cfg: Config, todo: list[Section]) -> list[str]:
    """What `--plan` prints: each section, done or what is left of it, and the calls that hold
    the rest (the searches and the ablation at the setup the kept jobs rows choose)."""
    lines, pieces, kept = [], [], kept_state(cfg)
    setup = choose(kept.jobs_rows(), cfg.sizes)
    at = {sec.name: sec for sec in sections(cfg.sizes, setup)}
    for sec in (at.get(s.name, s) for s in todo):
        record = recorded(cfg, sec)
        if record is not None:
            took = record["seconds"]
            lines.append(f"{sec.name:24s} done      {took:6.0f} s measured")
        else:
            units = sec.left(kept)
            left = sum(units)
            pieces += units
            part = f" (of {sec.estimate_s:.0f}: the rest is kept)" if left < sec.estimate_s - 1 else ""  # (printed to the second)
            lines.append(f"{sec.name:24s} to do     {left:6.0f} s estimated{part}" + ("  (resumable)" if sec.resumable else ""))
    usable = CALL_SECONDS - cfg.sizes.margin_s
    calls = calls_for(pieces, usable)
    lines.append(f"{'at':24s}           the searches' and the ablation's setup: {setup.why}")
    lines.append(f"{'left':24s}           {sum(pieces):6.0f} s estimated, about {max(1, calls)} call(s) of {CALL_SECONDS:.0f} s (one per GPU session; each holds whole parts, rows, trials and waves of runs in {usable:.0f} s)")
    return lines


STATE = "gpu-state.tar.gz"  # in the results folder: committed, so it travels to the next GPU session


def _state_files(cfg: Config) -> list[Path]:
    """What a later call resumes from: the studies (runs/, without teachers, exports, plots), the
    finished ablation runs, the jobs section's finished --jobs values and the step section's
    finished parts."""
    from nas_kd.distill.shared_cache import CACHE_FILE

    keep = []
    runs = cfg.work / "runs"
    # Never a teacher cache a search shares with its workers while it runs (4.5 GiB), nor a file
    # half written: a checkpoint may pack while a section is under way.
    if runs.is_dir():
        keep += [p for p in sorted(runs.rglob("*")) if p.is_file() and "export" not in p.parts and p.suffix not in (".png", ".part", ".tmp") and p.name != CACHE_FILE and p.relative_to(runs).parts[0] != "teachers"]
    return keep + [p for folder in ("ablation", "jobs", "step") for p in sorted((cfg.work / folder).glob("*.json"))]


def _write_tar(target: Path, members: list[tuple[Path, str]]) -> None:
    """Written beside the target and renamed: a call killed while packing leaves the last whole pack."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    with tarfile.open(tmp, "w:gz") as tar:
        for path, name in members:
            tar.add(path, arcname=name)
    os.replace(tmp, target)


def save_state(cfg: Config) -> Path | None:
    """The state archive (`STATE`, paths relative to the work folder), or None with nothing to keep."""
    files = _state_files(cfg)
    if not files:
        return None
    target = cfg.results / STATE
    _write_tar(target, [(p, str(p.relative_to(cfg.work))) for p in files])
    return target


def restore_state(cfg: Config, log=print) -> None:
    """Unpack the state archive into the work folder: the studies and ablation runs an earlier
    call (or GPU session) left unfinished resume from it."""
    archive = cfg.results / STATE
    if not archive.is_file():
        return
    with tarfile.open(archive) as tar:
        tar.extractall(cfg.work, filter="data")
        count = len(tar.getnames())
    log(f"bench-gpu: resumed {count} state files from {archive.name}")


PACKS_LOG = "packs.log"  # in the work folder: a line per pack of a kept piece (the call's own output stays short)


def _log_pack(cfg: Config, line: str) -> None:
    with open(cfg.work / PACKS_LOG, "a") as f:
        f.write(line + "\n")


def pack(cfg: Config, target: Path, say: Callable[[str], None] = lambda line: print(line, flush=True)) -> None:
    """Everything the call brings back, in one tar.gz whose paths are relative to the repository
    root (extract it there): the results, the markdown, the state archive, and the teachers
    section's resnet20 (the file to ship if it beats the shipped one). ``say`` gets the one line
    that says so (a checkpoint's goes to `PACKS_LOG`: the ablation alone packs 70 times, which
    would fill the device reply's 12,000-character tail)."""
    state = save_state(cfg)
    keep = sorted(cfg.results.glob("gpu_*.json")) + [cfg.results / "search.json", cfg.markdown, *([state] if state else [])]
    keep.append(cfg.work / "runs" / "teachers" / cfg.sizes.teacher_file())
    keep.append(cfg.work / FAILURES)
    _write_tar(target, [(p, str(_arcname(cfg, p.resolve()))) for p in keep if p.is_file()])
    say(f"bench-gpu: packed {sum(p.is_file() for p in keep)} files into {target} ({target.stat().st_size / 2**20:.1f} MiB); extract with: tar xzf {target.name} (in the repository root)")


def _arcname(cfg: Config, path: Path) -> Path:
    """Relative to the repository root (the GPU run), or to the work folder's parent (a smoke run
    in a folder of its own)."""
    try:
        return path.relative_to(ROOT)
    except ValueError:
        return path.relative_to(cfg.work.parent)


def device_command(data_dir: str = ".data", call_seconds: str | None = None) -> str:
    """The device call's command: `make bench-gpu DATA_DIR=... PACK=...` spelt out (the image need
    not have make). The wheels are installed once per machine (a marker in /tmp/site says they
    are): a second call on a machine still warm from the first starts the bench at once."""
    clock = "" if call_seconds is None else f" --call-seconds {call_seconds}"
    return (
        f"export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 && {{ test -f {WHEELS_DONE} || {{ {WHEELS_PIP} && touch {WHEELS_DONE}; }}; }}"
        f" && python3 -m bench.gpu --data-dir {data_dir}{clock} --pack $OUT/bench-gpu.tar.gz"
    )


# A second call within the same session is worth making only if a resumable section can start in
# it (MIN_SLICE) after what a call spends outside the bench's clock (CALL_OVERHEAD_S).
CALL_OVERHEAD_S = 40.0  # Python's start, the pack, the transfers back; the pip install where it runs
SECOND_CALL_SLACK_S = 30.0  # device time between the first call's reply and the second's start: the extract, the warm wait
WARM_SECOND_CALL_S = MIN_SLICE + CALL_OVERHEAD_S + SECOND_CALL_SLACK_S


def device_calls(data_dir: str = ".data") -> list[str]:
    """What `make gpu-prep` prints: the device calls a GPU session makes, and what to do after."""
    call = {"timeout_s": 600, "carry": [".whl", ".data"], "command": device_command(data_dir)}
    again = {"timeout_s": "<T>", "carry": [".whl", ".data"], "command": device_command(data_dir, f"<T-{CALL_OVERHEAD_S:.0f}>")}
    results = "docs/results"
    return [
        "# 1. here, once per session: wheels and data for the offline GPU machine (done by `make gpu-prep`)",
        "bash ../shared/device/wheels.sh",
        "# 1b. here, no device time: the smoke bench with only the GPU machine's packages (about 90 s)",
        "make gpu-env-check",
        "# 2. the device call: a GPU session's 15 minutes of device time hold the machine's start and this",
        "#    10-minute call. The call packs after every finished section and kept piece, so a call cut off still",
        f"#    brings back what it finished. Sections run in order ({', '.join(ORDER)});",
        "#    the next session's call resumes where this one stopped.",
        f"run {json.dumps(call)}",
        "# 3. AT ONCE, no give_back: the machine stays warm 30 s after a call, and a call on a warm machine starts",
        "#    nothing, where a fresh start needs 4 minutes of device time left (the ~200 s a 10-minute first call",
        "#    leaves). Here, in the repository root (files_at is in the call's reply):",
        "tar xzf <files_at>/bench-gpu.tar.gz",
        f"# 3b. then at once, if the reply's lease.budget_left_s is {WARM_SECOND_CALL_S:.0f} s or more, the same call again with",
        f"#    T = budget_left_s - {SECOND_CALL_SLACK_S:.0f} (it resumes from what 3 extracted; a resumable section needs {MIN_SLICE:.0f} s of its clock):",
        f"run {json.dumps(again)}",
        "#    and step 3 again for its pack. (Gone cold, a call starts a fresh machine where 4 minutes are left, else it is",
        "#    refused at no cost.) Then, or with less than that left after the first call:",
        "give_back",
        "# 4. here: what is done and left, then commit what the calls wrote:",
        f"python -m bench.gpu --plan && git add {results} docs/BENCHMARKS.md",
        f"#    ({results}/{STATE} holds the unfinished searches' studies, the ablation's finished runs, the jobs rows and step parts: committed, it travels)",
        "#    (a section that FAILED left its traceback in .bench-gpu/failures.log: fix it here; it runs again next call)",
        "# 5. if the teachers section's resnet20 beats the shipped teacher's test accuracy: ship it",
        f"python scripts/ship_teacher.py .bench-gpu/runs/teachers/{shipped_teacher_file()} --command {shlex.quote(SHIP_COMMAND)}",  # the manifest names the GPU the checkpoint says it trained on
    ]


# What the teachers section runs, as the user would type it (`ensure_teacher` with the same recipe).
SHIP_COMMAND = "nas-kd teacher --preset standard --reconstruction --seed 0"


def shipped_teacher_file() -> str:
    """The teachers section's file that `make search` ships as its default teacher."""
    return GPU.teacher_file()


def make_config(args) -> Config:
    from nas_kd.device import resolve_device

    sizes = SMOKE if args.smoke else GPU
    work = Path(args.work).resolve() if args.work else (SMOKE_WORK if args.smoke else WORK)
    results = work / "results" if args.smoke else ROOT / "docs" / "results"
    markdown = work / "BENCHMARKS.md" if args.smoke else ROOT / "docs" / "BENCHMARKS.md"
    device = resolve_device("cpu" if args.smoke else args.device)
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    return Config(sizes=sizes, device=device, data_dir=data_dir, results=results, markdown=markdown, work=work, deadline=time.monotonic() + args.call_seconds, argv=tuple(args.argv))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="every section in miniature on the CPU, into --work (default .bench-gpu-smoke/)")
    ap.add_argument("--section", default=None, help="run only these sections (comma-separated names; see --plan)")
    ap.add_argument("--force", action="store_true", help="redo sections whose JSON exists")
    ap.add_argument("--data-dir", default=None, help="folder holding <dataset>/ (on the GPU machine: .data)")
    ap.add_argument("--work", default=None, help="working folder (default .bench-gpu/, or .bench-gpu-smoke/ with --smoke)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--call-seconds", type=float, default=CALL_SECONDS, help="this call's own time limit (default 540 of a 600 s device call)")
    ap.add_argument("--pack", default=None, help="write results and resumable state to this .tar.gz at the end")
    ap.add_argument("--plan", action="store_true", help="list the sections, their estimates and which are done; run nothing")
    ap.add_argument("--render", action="store_true", help="rewrite the markdown of every finished section from its JSON; run nothing")
    ap.add_argument("--calls", action="store_true", help="print the device calls that run the GPU sections; run nothing")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.calls:
        print("\n".join(device_calls(os.path.relpath(args.data_dir, ROOT) if args.data_dir else ".data")))
        return 0
    cfg = make_config(args)
    todo = sections(cfg.sizes)
    if args.section:
        names = args.section.split(",")
        unknown = sorted(set(names) - {s.name for s in todo})
        if unknown:
            raise SystemExit(f"bench-gpu: unknown section(s) {', '.join(unknown)}: choose from {', '.join(s.name for s in todo)}")
        todo = [s for s in todo if s.name in names]
    if args.plan or args.render:
        if args.render:
            render_all(cfg, todo)
        print("\n".join(plan_lines(cfg, todo)))
        return 0
    if not cfg.smoke and cfg.device.type != "cuda":
        print("bench-gpu: no GPU here; the sections would measure a CPU (use --smoke for the miniature run)", flush=True)
        return 2
    cfg.work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    restore_state(cfg)
    os.chdir(cfg.work)  # runs/ (teachers, studies) lives in the work folder
    target = None if not args.pack else Path(args.pack) if Path(args.pack).is_absolute() else ROOT / args.pack
    if target:
        cfg = dataclasses.replace(cfg, checkpoint=lambda: pack(cfg, target, say=lambda line: _log_pack(cfg, line)))
    try:
        done = run_sections(cfg, todo, force=args.force, after=(lambda: pack(cfg, target)) if target else (lambda: None))
    finally:
        if target:
            pack(cfg, target)
    failed = (cfg.work / FAILURES).is_file() and (cfg.work / FAILURES).stat().st_mtime >= started
    print("bench-gpu: all sections done" if done else "bench-gpu: more to do; run the same command again", flush=True)
    if failed:
        print(f"bench-gpu: some sections FAILED in this call: see {cfg.work / FAILURES}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
