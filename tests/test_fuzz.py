"""Seeded fuzzing of the command line with damaged TIFF and PNG inputs.

Small valid files (striped, big-endian, tiled LZW/deflate/zstd, planar, BigTIFF,
uint16, float32 with the floating-point predictor; 8-bit RGB and 16-bit RGBA PNG)
are mutated: random byte flips, flips in the header, truncations, IFD values
rewritten in place (ImageWidth, StripOffsets, StripByteCounts, Compression,
BitsPerSample, ...), IFD entry types and counts, damaged strip/tile bytes; PNG
IHDR fields, IDAT bytes and chunk lengths with CRCs recomputed so that the
damage reaches the decoders. Each mutant goes into a stack with a valid file
(before or after it), alone, or twice, written to TIFF or PNG.

Every run must keep the contract of the "Bad input and faults" issue
(:func:`faultfiles.outcome_problems`): exit 0, 1 or 2 in bounded time; no
traceback and no "internal error"; on failure exactly one ``avgstack: error:``
line naming the file and nothing else on stderr (no tifffile or libpng
chatter); no temporary file; inputs and the previous output untouched. A PNG
mutant that OpenCV itself refuses must not produce exit 0.

Batch files and ``@list`` files are fuzzed too (:mod:`textfuzz`): wrong types and
sizes of values, unknown keys, deep nesting, byte damage, other encodings, list
files in every encoding with odd lines; the contract is the same, and a batch
that fails a job still prints its summary.

Most runs call ``avgstack.cli.main`` in this process (fast); a smaller subset
runs ``python -m avgstack`` to catch crashes of native code. ``scripts/fuzz.py``
runs the same cases for longer. A failure lists each kind of problem with the
case seeds, descriptions and reproducer commands; the mutants stay in the
test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import defaultdict

import pytest
import textfuzz
from faultfiles import (
    PNG_LAYOUTS,
    TIFF_LAYOUTS,
    FuzzSeed,
    make_case,
    reset_folder,
    run_case_in_process,
    run_case_subprocess,
    seed_files,
)

#: Cases per seed layout in process, and in subprocesses overall.
IN_PROCESS_CASES = 30
SUBPROCESS_CASES = 24
BASE_SEED = 20_240_601
#: Batch and list file cases in process, and in subprocesses.
TEXT_CASES = 300
TEXT_SUBPROCESS_CASES = 12


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz_seeds")
    return {name: FuzzSeed.load(name, path) for name, path in seed_files(folder).items()}


def _report(failures) -> str:
    """Group failing cases by problem: each with seeds, descriptions and reproducers."""
    groups = defaultdict(list)
    for case, kept in failures:
        for problem in case.problems:
            groups[problem.split(":")[0][:70]].append((case, kept, problem))
    lines = [f"{sum(len(v) for v in groups.values())} problems in {len(failures)} cases:"]
    for key, items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"- {key} ({len(items)} cases)")
        for case, kept, problem in items[:3]:
            lines.append(f"    case {case.case_seed}: {case.description}")
            lines.append(f"      {problem[:200]}")
            lines.append(f"      exit {case.code}, stderr: {case.stderr.strip()[:200]!r}")
            lines.append(f"      mutant kept as {kept}")
    return "\n".join(lines)


def _keep(case, folder, keep_folder) -> str:
    """Copy the mutant out of the work folder (it is reset between cases)."""
    os.makedirs(keep_folder, exist_ok=True)
    target = os.path.join(keep_folder, os.path.basename(case.mutant))
    shutil.copyfile(case.mutant, target)
    return target


def _run(seeds, names, count, base, tmp_path, runner, time_limit):
    work = tmp_path / "work"
    work.mkdir()
    chosen = [seeds[n] for n in names]
    for seed in chosen:  # seeds live in the module folder; copy them beside the mutants
        shutil.copy(seed.path, work)
    local = [FuzzSeed.load(s.name, str(work / os.path.basename(s.path))) for s in chosen]
    keep = [s.path for s in local]
    failures = []
    for i in range(count):
        reset_folder(work, keep)
        case = make_case(local, work, base + i)
        runner(case, work, time_limit)
        if case.problems:
            failures.append((case, _keep(case, work, tmp_path / "failing")))
    return failures


@pytest.mark.parametrize("layout", list(TIFF_LAYOUTS) + list(PNG_LAYOUTS))
def test_fuzz_in_process(seeds, tmp_path, layout):
    """IN_PROCESS_CASES mutants of one layout through ``avgstack.cli.main``."""
    fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    threads = threading.active_count()
    start = time.perf_counter()
    seed = BASE_SEED + 1000 * sorted(seeds).index(layout)
    failures = _run(seeds, [layout], IN_PROCESS_CASES, seed, tmp_path, run_case_in_process, time_limit=5.0)
    assert time.perf_counter() - start < 60
    if fds is not None:
        assert len(os.listdir("/proc/self/fd")) <= fds, "file descriptors leaked"
    assert threading.active_count() <= threads, "threads left running"
    assert not failures, _report(failures)


def test_fuzz_subprocess(seeds, tmp_path):
    """SUBPROCESS_CASES mutants of every layout through ``python -m avgstack`` (crashes of native code)."""
    failures = _run(seeds, sorted(seeds), SUBPROCESS_CASES, BASE_SEED + 500_000, tmp_path, run_case_subprocess,
                    time_limit=20.0)
    assert not failures, _report(failures)


def test_fuzz_cases_are_reproducible(seeds, tmp_path):
    """The same case seed gives the same mutant and command line (so reports can be replayed)."""
    work = tmp_path / "w"
    work.mkdir()
    local = [seeds[n] for n in sorted(seeds)]
    first = make_case(local, work, 12345)
    data = open(first.mutant, "rb").read()
    again = make_case(local, work, 12345)
    assert again.description == first.description and again.argv == first.argv
    assert open(again.mutant, "rb").read() == data


def _text_report(failures) -> str:
    lines = [f"{len(failures)} failing batch/list cases:"]
    for case in failures[:10]:
        lines.append(f"- case {case.case_seed} ({case.kind}): {case.description[:160]}")
        lines.append(f"    problems: {'; '.join(case.problems)[:300]}")
        lines.append(f"    exit {case.code}, stderr: {case.stderr.strip()[-300:]!r}")
        lines.append(f"    kept in {case.files[0]}")
    return "\n".join(lines)


def _run_text(tmp_path, count, base, runner, time_limit):
    root = textfuzz.make_project(tmp_path / "project")
    failures = []
    for i in range(count):
        textfuzz.reset_project(root)
        case = textfuzz.make_text_case(root, base + i)
        runner(case, root, time_limit)
        if case.problems:
            keep = tmp_path / "failing" / f"case-{case.case_seed}"
            keep.mkdir(parents=True)
            for path in case.files:
                if os.path.exists(path):
                    shutil.copy(path, keep)
            case.files = [str(keep / os.path.basename(p)) for p in case.files]
            failures.append(case)
    return failures


def test_fuzz_batch_and_list_files_in_process(tmp_path):
    """TEXT_CASES fuzzed batch and @list files through ``avgstack.cli.main``."""
    fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    start = time.perf_counter()
    failures = _run_text(tmp_path, TEXT_CASES, BASE_SEED + 700_000, textfuzz.run_text_case_in_process, 10.0)
    assert time.perf_counter() - start < 120
    if fds is not None:
        assert len(os.listdir("/proc/self/fd")) <= fds, "file descriptors leaked"
    assert not failures, _text_report(failures)


def test_fuzz_batch_and_list_files_subprocess(tmp_path):
    """TEXT_SUBPROCESS_CASES fuzzed batch and @list files through ``python -m avgstack``."""
    failures = _run_text(tmp_path, TEXT_SUBPROCESS_CASES, BASE_SEED + 800_000,
                         textfuzz.run_text_case_subprocess, 20.0)
    assert not failures, _text_report(failures)


def test_fuzz_text_cases_are_reproducible(tmp_path):
    root = textfuzz.make_project(tmp_path / "p")
    seen = set()
    for seed in range(40):
        textfuzz.reset_project(root)
        first = textfuzz.make_text_case(root, seed)
        data = [open(p, "rb").read() for p in first.files]
        textfuzz.reset_project(root)
        again = textfuzz.make_text_case(root, seed)
        assert (again.description, again.argv) == (first.description, first.argv)
        assert [open(p, "rb").read() for p in again.files] == data
        seen.add(first.description.split(":")[0])
    assert seen == set(textfuzz.MUTATORS), "every mutator is drawn"
