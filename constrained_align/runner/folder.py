"""One owner per output folder: a lock for the life of a run, and a manifest of what it wrote.

Every folder the library writes a run into (``train``, ``compare``, ``train-scorer``) gets

- ``.lock``, held with ``flock`` while the run lives. The operating system releases it when
  the process ends, however it ends, so a lock left by a killed process is simply taken over
  (with a message naming that process). A second run into a folder in use is refused at once.
- ``.constrained-align.json``, the manifest: which kind of run the folder holds, the identity
  of its settings, and the entries the library writes there. The library deletes nothing
  else: restarting a run, or ``--overwrite``, removes exactly the manifest's entries.

A folder is refused when it holds files the library did not write, or a run that has started
(it has records, a checkpoint or a summary) — unless ``--resume`` (continue that run) or
``--overwrite`` (start again) says otherwise. A run that died before its first record leaves
nothing worth keeping, so the next run into its folder restarts it without being asked.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from constrained_align.config import ConfigError
from constrained_align.utils import write_json

MANIFEST = ".constrained-align.json"
LOCK = ".lock"
Mode = Literal["new", "resume", "overwrite"]


class FolderInUseError(ConfigError):
    """Another live process holds the folder's lock."""


class RunFolder:
    """An output folder claimed by one run (see the module docstring).

    Args:
        path: the folder.
        kind: ``train``, ``compare`` or ``scorer``.
        identity: a digest of the run's settings (recorded, and named in refusals).
        entries: the top-level files and folders this kind of run writes there.
        say: where messages go (a taken-over lock, a restart).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        kind: str,
        identity: str,
        entries: Iterable[str],
        say: Callable[[str], None] = print,
    ) -> None:
        self.path = Path(path)
        self.kind = kind
        self.identity = identity
        self.entries = tuple(entries)
        self.say = say
        self._lock: Any = None

    # ---------------------------------------------------------------- reading

    def manifest(self) -> dict[str, Any] | None:
        """The folder's manifest, or None when the library never claimed it."""
        file = self.path / MANIFEST
        if not file.is_file():
            return None
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{file} is damaged ({err}); move the folder aside") from err
        if not isinstance(data, dict) or data.get("library") != "constrained-align":
            raise ConfigError(f"{file} is not a manifest of this library")
        return data

    def foreign(self, *, claimed: bool) -> list[str]:
        """Entries of the folder that the library did not write there: in a folder it never
        claimed, every entry; in its own folder, those outside its list."""
        if not self.path.is_dir():
            return []
        ours = {MANIFEST, LOCK, *self.entries} if claimed else {MANIFEST, LOCK}
        # Hidden names are the atomic writers' temporary files (".<name>.<random>.tmp").
        names = (p.name for p in self.path.iterdir())
        return sorted(n for n in names if n not in ours and not n.startswith("."))

    # ---------------------------------------------------------------- claiming

    def claim(self, mode: Mode, *, started: Callable[[], bool]) -> None:
        """Check the folder for ``mode``, take its lock and write the manifest.

        Args:
            mode: ``new`` (the default), ``resume`` (continue the run it holds) or
                ``overwrite`` (start again, removing what the library wrote there).
            started: whether the run in the folder has anything worth keeping.

        Raises:
            ConfigError: the folder cannot be written, holds foreign files or a started run
                (in ``new`` mode), holds no run (in ``resume`` mode), or is in use.
        """
        self._check_writable()
        self._decide(mode, started, act=False)  # refuse before touching anything
        self._acquire()
        try:
            self._decide(mode, started, act=True)  # again, now that no one else can change it
            write_json(
                self.path / MANIFEST,
                {
                    "library": "constrained-align",
                    "kind": self.kind,
                    "identity": self.identity,
                    "entries": list(self.entries),
                },
            )
        except BaseException:
            self.release()
            raise

    def _decide(self, mode: Mode, started: Callable[[], bool], *, act: bool) -> None:
        """Refuse the folder, or make it ready for ``mode`` (only when ``act``: restart and
        overwrite remove the library's entries)."""
        manifest = self.manifest()
        where = f"--output-dir {self.path}"
        if manifest is not None and manifest.get("kind") != self.kind:
            raise ConfigError(f"{where} holds a {manifest.get('kind')} run, not a {self.kind} run")
        if mode == "resume":
            if manifest is None:
                raise ConfigError(
                    f"--resume: {self.path} holds no run of this library to resume (no complete "
                    "checkpoint)"
                )
            return
        if manifest is None:
            foreign = self.foreign(claimed=False)
            clash = [name for name in self.entries if (self.path / name).exists()]
            if foreign and (mode != "overwrite" or clash):
                shown = ", ".join((clash or foreign)[:3])
                raise ConfigError(
                    f"{where} holds files this library did not write ({shown}); "
                    "pick an empty or new folder"
                )
            return
        if mode == "overwrite":
            if act:
                self.say(
                    f"--overwrite: removing the previous {self.kind} run's files in {self.path}"
                )
                self.clear()
            return
        if started():
            same = manifest.get("identity") == self.identity
            what = "this run" if same else "a run with other settings"
            raise ConfigError(
                f"{self.path} already holds a run ({what}); pass --resume to continue it, "
                "--overwrite to start again, or another --output-dir"
            )
        if act:
            self.say(f"restarting the run in {self.path}: it stopped before its first record")
            self.clear()

    def clear(self) -> None:
        """Remove the entries the library writes in this folder (nothing else)."""
        for name in self.entries:
            target = self.path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()

    def _check_writable(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--output-dir {self.path} is a file, not a folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.path):
                pass
        except OSError as err:
            raise ConfigError(f"--output-dir {self.path}: cannot write there ({err})") from err

    # ---------------------------------------------------------------- the lock

    def _acquire(self) -> None:
        handle = (self.path / LOCK).open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise FolderInUseError(
                f"{self.path} is in use by another run ({holder}); wait for it to end or pick "
                "another --output-dir"
            ) from None
        handle.seek(0)
        previous = handle.read().strip()
        if previous:
            self.say(f"{self.path}: taking over the lock left by {previous}, which has ended")
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._lock = handle

    def release(self) -> None:
        """Release the lock (the OS does it too when the process ends)."""
        if self._lock is not None:
            self._lock.seek(0)
            self._lock.truncate()
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
