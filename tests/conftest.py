"""Helpers to run the real launcher in a subprocess and to prove nothing of a job is left behind.

Every launch carries a unique LAUNCHER_JOB_ID in its environment; every process of the job (ranks,
DataLoader workers) inherits it, so leftovers are found by scanning /proc, whoever their parent is.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.preimported import Forked, Server, unwrap

REPO = Path(__file__).resolve().parents[1]
DDP_SCRIPT = REPO / "tests" / "scripts" / "ddp_script.py"
# Small but real: two ranks, a few dozen optimizer steps. No curves.png (matplotlib's 0.6 s at the
# end of each run) where no test looks at it: tests/test_run_dir.py and the sweep tests draw it.
TINY = ["data.dataset.num_samples=1024", "trainer.epochs=2", "trainer.curves=false"]
# A launcher starting torch, beside the other tests running in parallel (two workers on two cores),
# can take about 15 s before its rendezvous even begins: the slack a "fails within init_timeout"
# bound allows on top of the timeout (never torch's 30 minutes).
START_SLACK_S = 25
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK",
                  "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


@dataclass
class Launch:
    returncode: int
    stdout: str
    stderr: str
    run_dir: Path
    elapsed_s: float

    def summary(self) -> dict:
        return json.loads((self.run_dir / "summary.json").read_text())


def job_processes(job_id: str) -> list[int]:
    """PIDs of live processes whose environment carries this job's marker."""
    marker = f"LAUNCHER_JOB_ID={job_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if marker not in environ.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    continue
        except OSError:
            continue
        found.append(int(entry))
    return found


def describe(pids: list[int]) -> str:
    lines = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            cmdline = "?"
        lines.append(f"{pid}: {cmdline[:200]}")
    return "\n".join(lines)


def wait_for_no_leftovers(job_id: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (left := job_processes(job_id)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes of the job still running after {timeout_s}s:\n{describe(left)}"


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


_preimported: Server | None = None


def preimported_launcher() -> Server:
    """This test worker's pre-imported launcher (`tests.preimported`), started at its first use."""
    global _preimported
    if _preimported is None:
        base = Launcher(REPO).env("")
        del base["LAUNCHER_JOB_ID"]
        _preimported = Server(base)
    return _preimported


@pytest.fixture(scope="session", autouse=True)
def _stop_preimported_launcher() -> Iterator[None]:
    yield
    if _preimported is not None:
        _preimported.stop()


class Launcher:
    """Runs ``python -m launcher`` for one test, in the test's temporary directory: with
    ``preimported``, a fork of the worker's pre-imported launcher (`tests.preimported`) where that
    is the same launch."""

    def __init__(self, workdir: Path, preimported: bool = True) -> None:
        self.workdir = workdir
        self.preimported = preimported
        self.job_ids: list[str] = []

    def env(self, job_id: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items()
               if key not in RANK_VARIABLES and not key.startswith("SLURM_")}
        env["LAUNCHER_JOB_ID"] = job_id
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env.update(extra or {})
        return env

    def command(self, run_dir: Path, overrides: tuple[str, ...], prefix: Sequence[str] = (),
                entry: Sequence[str] = (sys.executable, "-m", "launcher")) -> list[str]:
        return [*prefix, *entry, f"hydra.run.dir={run_dir}", *overrides]

    def new_job_id(self) -> str:
        job_id = uuid.uuid4().hex
        self.job_ids.append(job_id)
        return job_id

    def run(self, *overrides: str, run_dir: Path | None = None, timeout_s: float = 180,
            env: dict[str, str] | None = None, prefix: Sequence[str] = (),
            entry: Sequence[str] = (sys.executable, "-m", "launcher")) -> Launch:
        """Run to completion; ``prefix`` wraps the command (e.g. to run it in a namespace),
        ``entry`` replaces ``python -m launcher`` (e.g. with the ``ddp-launch`` console script)."""
        run_dir = run_dir or self.workdir / "run"
        command = self.command(run_dir, overrides, prefix, entry)
        launch_env = self.env(self.new_job_id(), env)
        self._server_for(command, launch_env)  # started before the clock: a launch's time is its own
        start = time.monotonic()
        proc = self.run_command(command, launch_env, timeout_s)
        return Launch(proc.returncode, proc.stdout, proc.stderr, run_dir, time.monotonic() - start)

    def run_command(self, command: list[str], env: dict[str, str], timeout_s: float,
                    ) -> subprocess.CompletedProcess:
        """``subprocess.run(command, capture_output=True, text=True)`` in the test's directory, an
        AssertionError past ``timeout_s``; a fork of the pre-imported launcher where that is the
        same launch."""
        server = self._server_for(command, env)
        try:
            if server is not None:
                return server.run(command, self.workdir, env, timeout_s)
            return subprocess.run(command, cwd=self.workdir, env=env, capture_output=True, text=True,
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired as hung:
            raise AssertionError(f"launcher did not finish within {timeout_s}s:\n{hung.stderr}") from hung

    def _server_for(self, command: list[str], env: dict[str, str]) -> Server | None:
        """``LAUNCHER_TESTS_FRESH=1``: no launch is a fork (every test as it ran before the server)."""
        if not (self.preimported and os.environ.get("LAUNCHER_TESTS_FRESH") != "1"
                and unwrap(command, env) is not None):
            return None
        server = preimported_launcher()
        return server if server.serves(command, env) else None

    def start(self, *overrides: str, run_dir: Path | None = None, prefix: Sequence[str] = (),
              env: dict[str, str] | None = None) -> tuple[subprocess.Popen | Forked, str]:
        """Start in the background (own session, so a test can signal it like a terminal would);
        a fork of the pre-imported launcher where that is the same launch."""
        run_dir = run_dir or self.workdir / "run"
        job_id = self.new_job_id()
        command = self.command(run_dir, overrides, prefix)
        return self.popen(command, self.env(job_id, env), new_session=True), job_id

    def popen(self, command: list[str], env: dict[str, str], new_session: bool = False,
              ) -> subprocess.Popen | Forked:
        """``subprocess.Popen(command, stdout=PIPE, stderr=PIPE, text=True)`` in the test's
        directory; a fork of the pre-imported launcher where that is the same launch."""
        server = self._server_for(command, env)
        if server is not None:
            return server.start(command, self.workdir, env, new_session)
        return subprocess.Popen(command, cwd=self.workdir, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=new_session)

    def kill_leftovers(self) -> None:
        for job_id in self.job_ids:
            for pid in job_processes(job_id):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def run_for_module(directory: Path, *overrides: str, run_dir: Path) -> Launch:
    """One job for a module-scoped fixture (a run several tests share), in ``directory``: no
    test's ``launcher`` fixture cleans up after it, so this does."""
    runner = Launcher(directory)
    try:
        return runner.run(*overrides, run_dir=run_dir)
    finally:
        runner.kill_leftovers()


@pytest.fixture
def launcher(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Launcher]:
    """A fast-tier test's launches (command lines that end before a job starts) are fresh
    interpreters: the pre-imported launcher's start would cost each worker more than they do."""
    runner = Launcher(tmp_path, preimported=request.node.get_closest_marker("slow") is not None)
    yield runner
    runner.kill_leftovers()


@dataclass
class NodeResult:
    returncode: int
    stderr: str
    job_id: str
    elapsed_s: float


def run_nodes(launcher: Launcher, run_root: Path, per_node: Sequence[Sequence[str]],
              timeout_s: float = 120, prefix: Callable[[int], Sequence[str]] = lambda node: (),
              started: Callable[[dict[int, subprocess.Popen]], None] | None = None,
              ) -> dict[int, NodeResult]:
    """Start one launcher per node (the last node first: the others wait for node 0), each with
    its own overrides and run dir ``run_root/node<k>``; wait for all of them.

    ``started`` is called with the running processes, for tests that act during the job.
    """
    procs = {}
    begin = time.monotonic()
    for node in reversed(range(len(per_node))):
        procs[node] = launcher.start(*per_node[node], run_dir=run_root / f"node{node}",
                                     prefix=prefix(node))
    results = {}
    try:
        if started is not None:
            started({node: proc for node, (proc, _) in procs.items()})
        for node, (proc, job_id) in sorted(procs.items()):
            remaining = max(1.0, timeout_s - (time.monotonic() - begin))
            try:
                _, err = proc.communicate(timeout=remaining)
            except subprocess.TimeoutExpired as hung:
                raise AssertionError(f"node {node} did not finish within {timeout_s}s") from hung
            results[node] = NodeResult(proc.returncode, err, job_id, time.monotonic() - begin)
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


def project_with_its_own_trainer(directory: Path) -> Path:
    """A user's project: ``train.py`` imports the ``trainer.py`` beside it and leaves, per rank, a
    file ``imported_RANK`` holding that module's NAME ('the user trainer'). Returns the script."""
    directory.mkdir()
    (directory / "trainer.py").write_text("NAME = 'the user trainer'\n")
    (directory / "train.py").write_text(
        "import os, trainer\n"
        "open(os.path.join(os.path.dirname(__file__), 'imported_' + os.environ['RANK']), 'w')"
        ".write(trainer.NAME)\n")
    return directory / "train.py"


@pytest.fixture
def short_tmpdir() -> Iterator[Path]:
    """A TMPDIR of a launch's own, for `assert_no_litter`: short, since a Unix socket's path (the
    fork server's, made in it) must fit in 107 bytes, and a test's tmp_path is already 70."""
    directory = Path(tempfile.mkdtemp(prefix="lt-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def litter(directory: Path) -> list[str]:
    """What launches left in their temporary directory, but torch's compile cache, which is meant
    to outlive runs."""
    return sorted(path.name for path in directory.iterdir() if not path.name.startswith("torchinductor_"))


def assert_no_litter(directory: Path) -> None:
    """A finished launch leaves nothing in its temporary directory (`litter`)."""
    left = litter(directory)
    assert not left, f"left behind in {directory}: {left}"


def assert_ok(launch: Launch) -> None:
    assert launch.returncode == 0, f"launcher failed ({launch.returncode}):\n{launch.stderr[-5000:]}"


@pytest.fixture(scope="session")
def local_weights(tmp_path_factory) -> Iterator[Callable[..., str]]:
    """``local_weights(OVERRIDES...)``: weights_sha256 of the same training run on this machine
    (mp_spawn), the reference a Slurm job's ranks must reach. Each distinct run trains once a
    session: the Slurm tests share one worker, and several compare with the same run."""
    runner = Launcher(tmp_path_factory.mktemp("references"))
    known: dict[tuple[str, ...], str] = {}

    def weights(*overrides: str) -> str:
        if overrides not in known:
            place = runner.workdir / str(len(known))
            run = runner.run(*overrides, "launcher=mp_spawn", f"data.root={place / 'data'}", run_dir=place / "run")
            assert run.returncode == 0, run.stderr[-3000:]
            known[overrides] = run.summary()["weights_sha256"]
        return known[overrides]

    try:
        yield weights
    finally:
        runner.kill_leftovers()


# Parallel runs (pytest-xdist, `--dist loadgroup`): the tests that use the local Slurm cluster run in
# one worker, one after another (two nodes of four CPUs: a second worker's jobs would queue behind
# the first's, or change how Slurm packs tasks); a test that uses a module-scoped fixture (a trained
# run shared by several tests) stays with its module, so the fixture is built once. Every other
# test goes to whichever worker is free. Network namespaces need no group: each test builds its
# own, and a sweep spares those of a live process.
SHARED_RESOURCES = {"slurm_cluster": "slurm", "netns_slurm_cluster": "slurm"}


def _module_fixture_user(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs.values() if info is not None else ()
    return any(definition.scope == "module" for chain in definitions for definition in chain)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups into the test ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        group = next((name for fixture, name in SHARED_RESOURCES.items() if fixture in fixtures), None)
        if group is None and _module_fixture_user(item):
            group = item.module.__name__ if item.module else None
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session", autouse=True)
def _config_files_read_once() -> Iterator[None]:
    """In-process composes (the fast tier's few hundred) parse each config file once."""
    from tests.composing import reading_each_config_file_once

    with reading_each_config_file_once():
        yield
