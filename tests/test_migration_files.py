"""Migrations are frozen once released (src/jobrunner/_sql/migrations/README.md).

Every file is pinned by its SHA-256 in ``CHECKSUMS``: a released migration that changes fails
here (write a new one instead), and a new migration must be added to the table on purpose.
The numbering has one known gap, 0005, declared below with its reason; any other gap, a
duplicate, a reused number or a stray file in the folder fails.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path

from jobrunner._db._migrate import available_migrations

MIGRATIONS = Path(str(resources.files("jobrunner._sql").joinpath("migrations")))
FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

#: Numbers no migration has, each with the reason the gap is kept (never renumber: the
#: migrator records the versions a database applied, so a renumbered file would run again).
KNOWN_GAPS = {
    5: "never used: the Temporal migration was committed as 0006 (63df271); see the README",
}

#: Files of the folder that are not migrations.
NOT_MIGRATIONS = {"CHECKSUMS", "README.md"}


def _files() -> dict[int, Path]:
    found: dict[int, Path] = {}
    for path in sorted(MIGRATIONS.iterdir()):
        if path.name in NOT_MIGRATIONS or path.name == "__pycache__":
            continue
        match = FILE.match(path.name)
        assert match, f"{path.name}: not a migration (NNNN_lower_case_name.sql) nor a known file"
        version = int(match[1])
        assert version not in found, f"two migrations numbered {version:04d}"
        found[version] = path
    return found


def _checksums() -> dict[str, str]:
    table: dict[str, str] = {}
    for line in (MIGRATIONS / "CHECKSUMS").read_text(encoding="utf-8").splitlines():
        digest, name = line.split(maxsplit=1)
        assert re.fullmatch(r"[0-9a-f]{64}", digest), line
        name = name.lstrip("*")  # sha256sum's binary-mode marker
        assert name not in table, f"{name} is in CHECKSUMS twice"
        table[name] = digest
    return table


def test_numbering_is_consecutive_but_for_the_declared_gaps() -> None:
    versions = sorted(_files())
    assert versions[0] == 1
    missing = set(range(1, versions[-1] + 1)) - set(versions)
    assert missing == set(KNOWN_GAPS), (
        f"numbers without a migration: {sorted(missing)}; declared gaps: {sorted(KNOWN_GAPS)}"
    )
    assert not set(KNOWN_GAPS) & set(versions), "a declared gap was filled: numbers are not reused"


def test_the_migrator_applies_exactly_these_files() -> None:
    """What ships in the package is what ``jobrunner migrate`` runs (nothing skipped)."""
    applied = {m.version: m.name for m in available_migrations()}
    files = {version: path.name[5:-4] for version, path in _files().items()}
    assert applied == files


def test_every_migration_is_pinned_and_unchanged() -> None:
    pinned = _checksums()
    files = {path.name: path for path in _files().values()}
    unpinned = sorted(set(files) - set(pinned))
    assert not unpinned, (
        f"new migrations without a checksum: {unpinned}; add each with "
        "`sha256sum NNNN_name.sql >> CHECKSUMS` in src/jobrunner/_sql/migrations"
    )
    gone = sorted(set(pinned) - set(files))
    assert not gone, f"pinned migrations missing (never delete a migration): {gone}"
    changed = [
        name
        for name, path in files.items()
        if hashlib.sha256(path.read_bytes()).hexdigest() != pinned[name]
    ]
    assert not changed, (
        f"migrations changed after they were pinned: {changed}. A released migration never "
        "changes (databases that applied it would never see the change): revert it and write "
        "a new migration. Only a migration new in this unreleased version may be re-hashed."
    )


def test_the_checksum_check_can_fail() -> None:
    """The comparison above sees a one-byte change (guards against a vacuous table)."""
    pinned = _checksums()
    name, path = next(iter(sorted((p.name, p) for p in _files().values())))
    edited = path.read_bytes() + b"\n"
    assert hashlib.sha256(edited).hexdigest() != pinned[name]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == pinned[name]
