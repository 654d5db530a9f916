"""A stack of inputs opened from their headers and checked against each other.

:class:`Stack` owns every open input (one :class:`contextlib.ExitStack`) and
knows what the stack is: shape, sample type, colour meaning, and the picklable
descriptions (:class:`~avgstack.tasks.InputRef`) from which any worker reopens
the inputs. It neither plans nor computes.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Callable, Sequence

import numpy as np

from .errors import IncompatibleInputsError, UsageError
from .reading import ALPHA_KINDS, FilePool, ImageInfo, InputSpec, Source, open_source
from .reading.video import is_video
from .tasks import InputRef

__all__ = ["Stack", "stack_inputs", "check_compatible"]


def stack_inputs(inputs: Sequence[InputSpec] | InputSpec) -> list[InputSpec]:
    """Inputs as a list (a single path or array is a stack of one); ``'scan.tif[a:b]'`` becomes one input per page."""
    from .reading.pages import expand_page_range

    if isinstance(inputs, (str, os.PathLike, np.ndarray)):
        return expand_page_range(inputs)
    if isinstance(inputs, (bytes, int, float)) or inputs is None:
        raise UsageError(f"inputs must be paths or numpy arrays, got {type(inputs).__name__}")
    try:
        items = list(inputs)
    except TypeError:
        raise UsageError(f"inputs must be paths or numpy arrays, got {type(inputs).__name__}") from None
    return [page for item in items for page in expand_page_range(item)]


def _alpha_name(code: int) -> str:
    return ALPHA_KINDS.get(code, str(code))


def check_compatible(infos: Sequence[ImageInfo]) -> None:
    """Refuse inputs that disagree, naming the first odd one.

    Shape, sample type and colour are compared with the first input; alpha
    kinds (associated vs unassociated) are compared across every input that
    states one, so ``[unspecified, associated, unassociated]`` is refused too.
    """
    first = infos[0]
    stated: dict[int, ImageInfo] = {}  # first input stating an alpha kind, per extra sample
    for info in infos:
        if info is not first:
            if info.shape != first.shape:
                raise IncompatibleInputsError(
                    f"{info.name}: is {info.width}x{info.height} with {info.samples} channel(s), "
                    f"expected {first.width}x{first.height} with {first.samples} like {first.name}"
                )
            if info.dtype != first.dtype or info.bits != first.bits:
                raise IncompatibleInputsError(
                    f"{info.name}: has {info.describe()} samples, expected {first.describe()} like {first.name}"
                )
            if info.photometric != first.photometric:
                raise IncompatibleInputsError(
                    f"{info.name}: colour is {info.photometric}, expected {first.photometric} like {first.name}"
                )
            o1, o2 = info.metadata.get("orientation", 1), first.metadata.get("orientation", 1)
            if o1 != o2:
                raise IncompatibleInputsError(
                    f"{info.name}: orientation tag is {o1}, expected {o2} like {first.name}"
                )
        for k, code in enumerate(info.extrasamples):
            if not code:
                continue
            earlier = stated.setdefault(k, info)
            theirs = earlier.extrasamples[k]
            if theirs != code:
                raise IncompatibleInputsError(
                    f"{info.name}: has {_alpha_name(code)}, expected {_alpha_name(theirs)} like {earlier.name}"
                )


class Stack:
    """A stack of inputs opened from their headers, ready to be planned and reduced.

    Use as a context manager; every source and descriptor is released on exit.

    Parameters
    ----------
    inputs : sequence of str, path-like or ndarray
        The frames. Arrays are in OpenCV's layout.
    dtype : numpy dtype or callable, optional
        Output sample type; defaults to the inputs'. A callable gets the
        inputs' type and returns the output's (a method's default, see
        :meth:`avgstack.options.JobOptions.out_dtype`).
    budget : int, optional
        The job's memory budget: inputs whose tables alone would exceed it are refused while opening.
    videos : bool
        Read video files as one input per selected frame (``frames``, then ``sample`` evenly spaced
        ones, as :func:`avgstack.reading.video.select_frames`), decoded in order once per pass; without
        it a video is refused (frame-by-frame methods read videos through the accumulator instead).
    """

    def __init__(
        self,
        inputs: Sequence[InputSpec],
        dtype: np.dtype | Callable[[np.dtype], np.dtype] | None = None,
        budget: int | None = None,
        *,
        videos: bool = False,
        frames: slice | None = None,
        sample: int | None = None,
    ) -> None:
        specs = stack_inputs(inputs)
        if not specs:
            raise UsageError("no inputs given")
        self._exit = contextlib.ExitStack()
        self.pool = self._exit.enter_context(FilePool())
        refs: list[InputRef] = []
        self.has_video = False
        try:
            self.sources: list[Source] = []
            for spec in specs:
                if videos and is_video(spec):
                    from .reading.videoframes import open_video_frames

                    path = os.fspath(spec)  # type: ignore[arg-type]
                    cursor, frame_sources = open_video_frames(path, frames, sample)
                    self._exit.callback(cursor.close)
                    for source in frame_sources:
                        refs.append(InputRef(len(self.sources), path=path, frame=source.frame))
                        self.sources.append(source)
                    self.has_video = True
                    continue
                i = len(self.sources)
                self.sources.append(self._exit.enter_context(open_source(spec, self.pool, i, budget=budget)))
                refs.append(InputRef.of(spec, i))
            self.infos = [s.info for s in self.sources]
            check_compatible(self.infos)
        except BaseException:
            self._exit.close()
            raise
        first = self.infos[0]
        # colour meaning comes from the first input that states it (TIFF over PNG and arrays)
        described = next((i for i in self.infos if i.format == "tiff"), first)
        self.info = described
        self.in_dtype = first.dtype
        if callable(dtype) and not isinstance(dtype, (type, np.dtype)):
            dtype = dtype(first.dtype)
        self.out_dtype = np.dtype(dtype) if dtype is not None else first.dtype
        if described.photometric == "cielab":
            from .reading.lab import check_output_dtype

            check_output_dtype(described.name, first.dtype, self.out_dtype)
        self.out_bits = first.bits if self.out_dtype == first.dtype else None
        self.extrasamples = tuple(
            max((i.extrasamples[k] if k < len(i.extrasamples) else 0) for i in self.infos)
            for k in range(len(described.extrasamples))
        )
        self.shape = first.shape
        self.streamable = all(i.streamable for i in self.infos)
        self.refs = tuple(refs)

    def close(self) -> None:
        """Release every input."""
        self._exit.close()

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def count(self) -> int:
        """Number of frames."""
        return len(self.sources)

    def carried_metadata(self) -> dict[str, Any]:
        """What the output TIFF carries over (ICC profile, resolution, tags), loaded from the one input
        that describes the stack, when asked."""
        return next(s for s in self.sources if s.info is self.info).carried_metadata()

    def segment_rows(self) -> int:
        """Rows that bands (and their per-thread parts) should be multiples of, so no strip or tile is decoded twice."""
        height = self.shape[0]
        rows = 1
        for info in self.infos:
            rows = math.lcm(rows, info.segment_height)
            if rows > height:
                return max(i.segment_height for i in self.infos)
        return rows

    def scratch_bytes(self) -> int:
        """Decode scratch one band read needs at most, over every input."""
        return max(i.scratch_bytes for i in self.infos)
