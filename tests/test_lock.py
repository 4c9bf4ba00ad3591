"""The locks agree with pyproject.toml, so that a dependency change without a re-lock
(scripts/lock) fails here instead of drifting.

requirements.lock (runtime + dev) is what scripts/test and CI install, and
requirements-runtime.lock (runtime only) what the Dockerfile and scripts/serve install.
Plain functions with no fixtures: these tests read files and installed metadata only.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
FULL_LOCK = ROOT / "requirements.lock"
RUNTIME_LOCK = ROOT / "requirements-runtime.lock"
PROJECT = "threadline (pyproject.toml)"
# Libraries whose private names the fast paths use: pinned to one minor version each.
MINOR_PINNED = ("strawberry-graphql", "graphql-core", "uvicorn", "sqlalchemy")
RELOCK = "pyproject.toml and the lock disagree: run scripts/lock (README: The locks)"


@dataclass
class Locked:
    version: Version
    hashes: set[str] = field(default_factory=set)
    via: set[str] = field(default_factory=set)


Lock = dict[NormalizedName, Locked]


def _read_lock(path: Path) -> Lock:
    """uv's requirements format: `name==version \\`, `--hash=...` lines, one `# via a, b` line."""
    locked: Lock = {}
    current: Locked | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("# This file") or line.startswith("#    "):
            continue
        if not raw[0].isspace():
            name, _, version = line.rstrip(" \\").partition("==")
            assert version, f"{path.name}: not an exact pin: {line!r}"
            current = locked[canonicalize_name(name)] = Locked(Version(version))
        elif current is None:
            raise AssertionError(f"{path.name}: a continuation line before any pin: {line!r}")
        elif line.startswith("--hash="):
            current.hashes.add(line.removeprefix("--hash=").rstrip(" \\"))
        elif line.startswith("# via "):
            parents = (part.strip() for part in line.removeprefix("# via ").split(","))
            current.via |= {part for part in parents if part and not part.startswith("-c ")}
    return locked


def _declared(extra: str | None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    if extra is not None:
        requirements += [Requirement(text) for text in project["optional-dependencies"][extra]]
    return [r for r in requirements if r.marker is None or r.marker.evaluate()]


def _unsatisfied(requirements: Iterable[Requirement], lock: Lock) -> list[str]:
    problems = []
    for requirement in requirements:
        entry = lock.get(canonicalize_name(requirement.name))
        if entry is None:
            problems.append(f"{requirement} is not locked")
        elif not requirement.specifier.contains(entry.version, prereleases=True):
            problems.append(f"{requirement} but {requirement.name}=={entry.version} is locked")
    return problems


def _check_against_pyproject(lock_path: Path, extra: str | None) -> None:
    lock = _read_lock(lock_path)
    declared = _declared(extra)
    problems = _unsatisfied(declared, lock)
    # Nothing locked that pyproject.toml no longer asks for, directly or through a parent.
    roots = {canonicalize_name(r.name) for r in declared}
    for name, entry in lock.items():
        if PROJECT in entry.via and name not in roots:
            problems.append(f"{name} is locked for pyproject.toml, which no longer declares it")
    reachable = set(roots) & set(lock)
    grew = True
    while grew:
        grew = False
        for name, entry in lock.items():
            parents = {canonicalize_name(p) for p in entry.via if p != PROJECT}
            if name not in reachable and parents & reachable:
                reachable.add(name)
                grew = True
    problems += [f"{name} is locked but nothing requires it" for name in set(lock) - reachable]
    assert not problems, f"{lock_path.name}: {RELOCK}:\n  " + "\n  ".join(sorted(problems))


def test_the_full_lock_has_what_pyproject_declares_and_nothing_else() -> None:
    _check_against_pyproject(FULL_LOCK, "dev")


def test_the_runtime_lock_has_what_pyproject_declares_and_nothing_else() -> None:
    _check_against_pyproject(RUNTIME_LOCK, None)


def test_the_runtime_lock_is_a_slice_of_the_full_lock() -> None:
    full, runtime = _read_lock(FULL_LOCK), _read_lock(RUNTIME_LOCK)
    differing = [
        f"{name}: in the runtime lock, absent in the full lock" for name in runtime.keys() - full
    ]
    differing += [
        f"{name}: {entry.version} in the runtime lock, {full[name].version} in the full lock"
        f"{' (other hashes)' if full[name].version == entry.version else ''}"
        for name, entry in runtime.items()
        if name in full
        if (full[name].version, full[name].hashes) != (entry.version, entry.hashes)
    ]
    assert not differing, f"{RELOCK}:\n  " + "\n  ".join(differing)


def test_every_locked_package_is_hashed() -> None:
    for path in (FULL_LOCK, RUNTIME_LOCK):
        unhashed = [name for name, entry in _read_lock(path).items() if not entry.hashes]
        assert not unhashed, f"{path.name}: no --hash for {unhashed}: {RELOCK}"


def test_the_fast_path_libraries_are_pinned_to_one_minor_version() -> None:
    declared = {canonicalize_name(r.name): r for r in _declared(None)}
    # A library no longer declared has no private names left to break.
    pinned = [canonicalize_name(name) for name in MINOR_PINNED if name in declared]
    assert pinned, f"none of {MINOR_PINNED} is declared: update MINOR_PINNED"
    for name in pinned:
        specifier = declared[name].specifier
        lower = [s for s in specifier if s.operator == ">="]
        upper = [s for s in specifier if s.operator == "<"]
        assert len(lower) == 1 and len(upper) == 1, f"{name}: want >=X.Y.Z,<X.Y+1, not {specifier}"
        low, high = Version(lower[0].version), Version(upper[0].version)
        assert (high.major, high.minor) == (low.major, low.minor + 1), (
            f"{name} allows more than one minor version ({specifier}): its private names are "
            "used, so an upgrade is a deliberate step (README: Upgrading a pinned library)"
        )


def test_what_the_locked_packages_require_is_locked_too() -> None:
    """Extras and transitive requirements, read from the installed packages' metadata."""
    lock = _read_lock(FULL_LOCK)
    queue = [(canonicalize_name(r.name), frozenset(r.extras)) for r in _declared("dev")]
    seen: set[tuple[NormalizedName, frozenset[str]]] = set()
    problems: list[str] = []
    while queue:
        name, extras = queue.pop()
        if (name, extras) in seen or name not in lock:
            continue  # a missing name is the pyproject tests' finding
        seen.add((name, extras))
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name}=={lock[name].version} is locked but not installed")
            continue
        if Version(distribution.version) != lock[name].version:
            problems.append(
                f"{name}=={distribution.version} is installed, {lock[name].version} is locked"
            )
            continue
        needed = [
            requirement
            for requirement in map(Requirement, distribution.requires or [])
            if requirement.marker is None
            or any(requirement.marker.evaluate({"extra": extra}) for extra in {"", *extras})
        ]
        problems += [f"{name}: {problem}" for problem in _unsatisfied(needed, lock)]
        queue += [(canonicalize_name(r.name), frozenset(r.extras)) for r in needed]
    assert not problems, (
        "the environment or requirements.lock is off (pip install --no-deps -r requirements.lock, "
        "or scripts/lock after a pyproject.toml change):\n  " + "\n  ".join(sorted(problems))
    )
