"""Print what an optional extra of blipsearch installs beyond the base install, as found in this venv.

Used by scripts/lock.sh to hash-pin an extra (base packages stay under constraints.txt) and by
tests/test_testinfra.py to check the pinned list is still complete. Usage: python extra_closure.py EXTRA
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def _applies(requirement: Requirement, extra: str) -> bool:
    return requirement.marker is None or requirement.marker.evaluate({"extra": extra})


def _closure(requirements: list[Requirement]) -> set[str]:
    seen: set[str] = set()
    pending = list(requirements)
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            installed = distribution(requirement.name)
        except PackageNotFoundError:
            sys.exit(f"{requirement.name} is not installed in this venv")
        for dependency in map(Requirement, installed.requires or []):
            if any(_applies(dependency, extra) for extra in ["", *requirement.extras]):
                pending.append(dependency)
    return seen


def extra_only(extra: str) -> list[str]:
    own = [Requirement(line) for line in distribution("blipsearch").requires or []]
    base = _closure([r for r in own if _applies(r, "")])
    added = _closure([r for r in own if not _applies(r, "") and _applies(r, extra)])
    return sorted(added - base)


if __name__ == "__main__":
    print("\n".join(extra_only(sys.argv[1])))
