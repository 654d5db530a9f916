#!/usr/bin/env python
"""Fuzz avgstack's command line with damaged TIFF and PNG inputs, batch files and list files.

    python scripts/fuzz.py --seconds 600 --seed 1 --out fuzz-crashes
    python scripts/fuzz.py --replay 1000042                # run one reported image case again, verbosely
    python scripts/fuzz.py --replay-text 1000043           # the same for a batch/list file case
    python scripts/fuzz.py --mix text --seconds 60         # batch and list files only

Batch and @list file cases (``tests/textfuzz.py``) are fuzzed in a small project
folder: values of the wrong type and size, unknown keys, deep nesting, byte damage,
other encodings, list files in every encoding with odd lines. With ``--mix both``
(the default) every other case is one of them.

The cases are those of ``tests/test_fuzz.py`` (mutators and checks live in
``tests/faultfiles.py``): small valid files of every layout, damaged by byte
flips, truncation, rewritten IFD values, types and counts, corrupt strips and
tiles, PNG header and chunk edits; each run must exit 0, 1 or 2 quickly with one
clear error line, no traceback, no temporary file, inputs and the previous
output untouched.

Most cases run in this process through ``avgstack.cli.main`` (fast); every
``--subprocess-every``-th case runs ``python -m avgstack`` so that crashes of
native code are seen. Before each in-process case the case is written to
``OUT/last_case.txt``, so if the fuzzer itself dies (a segfault in a codec) the
culprit is known. Each failing case is saved as ``OUT/case-SEED/`` with the
mutant, the valid file(s) it was stacked with, ``report.txt`` and ``repro.sh``.

Exit status: 0 if every case kept the contract, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import faultfiles as ff  # noqa: E402
import textfuzz as tf  # noqa: E402


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60, help="how long to fuzz (default 60)")
    parser.add_argument("--seed", type=int, default=None, help="base seed (default: from the clock, printed)")
    parser.add_argument("--out", default="fuzz-crashes", help="folder for failing cases (default fuzz-crashes)")
    parser.add_argument("--subprocess-every", type=int, default=10, metavar="N",
                        help="run every Nth case as 'python -m avgstack' (0: never; 1: always)")
    parser.add_argument("--layouts", nargs="+", metavar="NAME",
                        help=f"seed layouts to use (default all: {', '.join(list(ff.TIFF_LAYOUTS) + list(ff.PNG_LAYOUTS))})")
    parser.add_argument("--keep", type=int, default=5, help="failing cases saved per kind of problem (default 5)")
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds one case may take (default 10)")
    parser.add_argument("--replay", type=int, metavar="CASE_SEED", help="run one case (as reported) and show it")
    parser.add_argument("--replay-text", type=int, metavar="CASE_SEED",
                        help="run one batch/list file case (as reported) and show it")
    parser.add_argument("--mix", choices=["both", "image", "text"], default="both",
                        help="damaged images, batch/list files, or both alternating (default both)")
    return parser.parse_args(argv)


def _signature(problem: str) -> str:
    return problem.split(":")[0][:70]


def _save(case: ff.FuzzCase, out: Path, how: str) -> Path:
    """Copy the case's files out of the work folder and write report.txt and repro.sh."""
    folder = out / f"case-{case.case_seed}"
    folder.mkdir(parents=True, exist_ok=True)
    mapping = {}
    for arg in case.argv[2:]:
        if os.path.isfile(arg) and arg not in mapping:
            mapping[arg] = str(folder / os.path.basename(arg))
            shutil.copyfile(arg, mapping[arg])
    argv = ["-o", str(folder / os.path.basename(case.argv[1]))] + [mapping.get(a, a) for a in case.argv[2:]]
    (folder / "repro.sh").write_text(
        "#!/bin/sh\n# " + case.description + "\n"
        f"cd {shlex.quote(str(ROOT))} && printf 'previous output\\n' > {shlex.quote(argv[1])} && "
        f"{shlex.quote(sys.executable)} -m avgstack {' '.join(shlex.quote(a) for a in argv)} </dev/null\n"
    )
    (folder / "report.txt").write_text(
        f"case seed: {case.case_seed}\nrun: {how}\ndescription: {case.description}\n"
        f"exit: {case.code}\nseconds: {case.seconds:.2f}\nproblems:\n"
        + "".join(f"  - {p}\n" for p in case.problems)
        + f"stderr:\n{case.stderr}\n"
    )
    return folder


def _save_text(case: tf.TextCase, root: Path, out: Path, how: str) -> Path:
    """Copy the whole project (it is small) and write report.txt and repro.sh."""
    folder = out / f"text-case-{case.case_seed}"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(os.fsencode(root), os.fsencode(folder / "project"), symlinks=True)
    argv = [a.replace(str(root), str(folder / "project")) for a in case.argv]
    (folder / "repro.sh").write_text(
        "#!/bin/sh\n# " + case.description.replace("\n", "\\n") + "\n"
        f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m avgstack "
        f"{' '.join(shlex.quote(a) for a in argv)} </dev/null\n"
    )
    (folder / "report.txt").write_text(
        f"case seed: {case.case_seed} (--replay-text)\nrun: {how}\nkind: {case.kind}\n"
        f"description: {case.description}\nexit: {case.code}\nseconds: {case.seconds:.2f}\nproblems:\n"
        + "".join(f"  - {p}\n" for p in case.problems) + f"stderr:\n{case.stderr}\n",
        errors="backslashreplace",
    )
    return folder


def _seeds(work: Path, layouts) -> list[ff.FuzzSeed]:
    seeds = [ff.FuzzSeed.load(name, path) for name, path in ff.seed_files(work).items()]
    if layouts:
        unknown = set(layouts) - {s.name for s in seeds}
        if unknown:
            raise SystemExit(f"unknown layouts: {', '.join(sorted(unknown))}")
        seeds = [s for s in seeds if s.name in layouts]
    return seeds


def main(argv=None) -> int:
    args = _parse(argv)
    base = args.seed if args.seed is not None else int(time.time()) % 1_000_000
    out = Path(args.out)
    work = Path(tempfile.mkdtemp(prefix="avgstack-fuzz-"))
    try:
        seeds = _seeds(work, args.layouts)
        keep = [s.path for s in seeds]
        project = tf.make_project(work / "project")
        if args.replay_text is not None:
            tf.reset_project(project)
            case = tf.make_text_case(project, args.replay_text)
            tf.run_text_case_subprocess(case, project, args.time_limit)
            print(f"case {case.case_seed}: {case.description}\n{case.reproducer()}\nexit {case.code}")
            print(case.stderr, end="")
            print("problems:", case.problems or "none")
            if case.problems:
                print("saved in", _save_text(case, project, out, "subprocess"))
            return 1 if case.problems else 0
        if args.replay is not None:
            ff.reset_folder(work, keep)
            case = ff.make_case(seeds, work, args.replay)
            ff.run_case_subprocess(case, work, args.time_limit)
            print(f"case {case.case_seed}: {case.description}\n{case.reproducer()}\nexit {case.code}")
            print(case.stderr, end="")
            print("problems:", case.problems or "none")
            if case.problems:
                print("saved in", _save(case, out, "subprocess"))
            return 1 if case.problems else 0

        print(f"fuzzing for {args.seconds:.0f} s from seed {base} with {len(seeds)} layouts; failures go to {out}/",
              flush=True)
        out.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + args.seconds
        kinds: Counter[str] = Counter()
        runs = failed = 0
        case_seed = base * 1000
        while time.monotonic() < deadline:
            turn = runs // 2 if args.mix == "both" else runs  # so that both kinds get subprocess runs
            use_subprocess = args.subprocess_every and turn % args.subprocess_every == 0
            if args.mix == "text" or (args.mix == "both" and runs % 2 == 1):
                tf.reset_project(project)
                case = tf.make_text_case(project, case_seed)
                if use_subprocess:
                    tf.run_text_case_subprocess(case, project, args.time_limit)
                else:
                    (out / "last_case.txt").write_text(
                        f"text case seed {case.case_seed} (base seed {base}): {case.description}\n"
                        f"{case.reproducer()}\n", errors="backslashreplace")
                    tf.run_text_case_in_process(case, project, args.time_limit)
                runs += 1
                if case.problems:
                    failed += 1
                    new = [p for p in case.problems if kinds["text: " + _signature(p)] < args.keep]
                    for p in case.problems:
                        kinds["text: " + _signature(p)] += 1
                    if new:
                        folder = _save_text(case, project, out, "subprocess" if use_subprocess else "in process")
                        print(f"FAIL text case {case.case_seed}: {case.description[:200]}\n"
                              f"     {'; '.join(case.problems)[:300]}\n     saved in {folder}", flush=True)
                case_seed += 1
                continue
            ff.reset_folder(work, keep)
            case = ff.make_case(seeds, work, case_seed)
            if use_subprocess:
                ff.run_case_subprocess(case, work, args.time_limit)
            else:
                (out / "last_case.txt").write_text(
                    f"case seed {case.case_seed} (base seed {base}): {case.description}\n{case.reproducer()}\n"
                )
                ff.run_case_in_process(case, work, args.time_limit)
            runs += 1
            if case.problems:
                failed += 1
                new = [p for p in case.problems if kinds[_signature(p)] < args.keep]
                for p in case.problems:
                    kinds[_signature(p)] += 1
                if new:
                    folder = _save(case, out, "subprocess" if use_subprocess else "in process")
                    print(f"FAIL case {case.case_seed}: {case.description}\n"
                          f"     {'; '.join(case.problems)[:300]}\n     saved in {folder}", flush=True)
            case_seed += 1
        (out / "last_case.txt").unlink(missing_ok=True)
        print(f"{runs} cases, {failed} failed")
        for kind, count in kinds.most_common():
            print(f"  {count:6d}  {kind}")
        return 1 if failed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
