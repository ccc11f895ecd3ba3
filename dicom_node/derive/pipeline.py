"""A series through the engine as a pipeline: decoding, inference and derive/encode overlap.

    for o in enhance_stream(paths, pydicom.dcmread, lambda ds: engine, settings.derive):
        if o.error is not None: ...          # this instance only; the rest goes on
        else: write(o.data)                  # the encoded derived file, in source order

Three stages, each its own thread, joined by bounded queues (memory stays bounded):

* **read**: ``read(source)`` and the pixel decode of the next instances (compressed pixel
  data in a worker process, :mod:`dicom_node.derive.codec_pool`);
* **infer**: groups of up to ``group`` consecutive instances of the same engine go to
  :meth:`sr_engine.Engine.enhance_many` (the tiles of several slices share backend calls;
  each result equals that of enhancing the instance alone);
* **derive**: :func:`dicom_node.derive.instance.derive_instance` and the encoding into the
  output transfer syntax (compressed: in that worker process), while the next group infers.

The caller's thread only takes the outcomes, in the order of ``sources``, and writes or
sends them: a caller that stops early (an exception, a fatal instance) writes nothing
after it. The backends release the GIL, so the stages run on the cores in parallel; the
pixel codecs do not, hence their process (started only for a compressed series).
An instance that fails in any stage gives an :class:`Outcome` with ``error`` set (for
``UnsupportedInput`` or any other exception); the results are the same as
:func:`dicom_node.derive.process.enhance_instance` one instance at a time.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
from pydicom.dataset import Dataset

from dicom_node.config import DeriveSettings
from dicom_node.derive.codec_pool import CodecPool
from dicom_node.derive.instance import derive_instance
from dicom_node.derive.process import EngineLike, combine_frames, uid_variant
from sr_engine.meta import PixelMeta, rescale_varies

S = TypeVar("S")

GROUP = 4  # instances per enhance_many call (a stop waits for at most one group)
_POLL = 0.5  # seconds between checks of the stop flag / calls of ``on_wait``


@dataclass
class Outcome(Generic[S]):
    """One source instance after the pipeline: ``data`` (the encoded derived file, with
    ``out`` its dataset and ``result`` the engine's ``Enhanced``) or ``error``."""

    source: S
    ds: Dataset | None = None
    engine: Any = None
    out: Dataset | None = None
    result: Any = None
    data: bytes | None = None
    error: BaseException | None = None
    # what the engine runs: one (pixels, meta) per unit; several units when the rescale of
    # a multi-frame object varies from frame to frame (then combined into one result)
    units: list[tuple[np.ndarray, PixelMeta]] = field(default_factory=list, repr=False)
    per_frame: bool = False


class _Stopped(Exception):
    pass


_END = object()


def enhance_stream(
    sources: Iterable[S],
    read: Callable[[S], Dataset],
    engine_for: Callable[[Dataset], EngineLike],
    settings: DeriveSettings | None = None,
    *,
    group: int = GROUP,
    on_wait: Callable[[], None] | None = None,
    codecs: CodecPool | None = None,
) -> Iterator[Outcome[S]]:
    """Enhance ``sources`` (paths, database rows: anything ``read`` takes) in a pipeline and
    yield one :class:`Outcome` per source, in order.

    ``read(source)`` returns the dataset; ``engine_for(ds)`` the engine for it (either may
    raise: that instance's outcome carries the error). ``on_wait`` is called about twice a
    second while the caller waits for the next outcome (renew a lease; raise to stop).
    Closing the iterator early stops the stages. ``codecs`` decodes and encodes compressed
    pixel data; by default a pool of the stream's own, closed with it.
    """
    settings = settings or DeriveSettings()
    own_codecs = codecs is None
    codecs = codecs or CodecPool()
    consistency = settings.data_consistency
    stop = threading.Event()
    depth = max(2, group) * 2
    decoded: queue.Queue = queue.Queue(depth)
    inferred: queue.Queue = queue.Queue(depth)
    done: queue.Queue = queue.Queue(depth)

    def put(q: queue.Queue, item: Any) -> None:
        while True:
            if stop.is_set():
                raise _Stopped
            try:
                q.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def get(q: queue.Queue) -> Any:
        while True:
            if stop.is_set():
                raise _Stopped
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                continue

    def stage(body: Callable[[], None], out: queue.Queue) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except _Stopped:
                return
            except BaseException as e:  # a bug in a stage: the caller sees it, never hangs
                try:
                    put(out, e)
                except _Stopped:
                    return
            try:
                put(out, _END)
            except _Stopped:
                return

        return run

    def reading() -> None:
        for src in sources:
            o: Outcome[S] = Outcome(src)
            try:
                o.ds = read(src)
                o.engine = engine_for(o.ds)
                o.units, o.per_frame = _units(o.ds, codecs.read_pixels)
            except Exception as e:  # noqa: BLE001 - recorded per instance
                o.error = e
            put(decoded, o)

    def inferring() -> None:
        pending: list[Outcome[S]] = []

        def flush() -> None:
            _infer(pending, consistency)
            for o in pending:
                put(inferred, o)
            pending.clear()

        while (o := get(decoded)) is not _END:
            if isinstance(o, BaseException):
                flush()
                put(inferred, o)
                return
            if o.error is not None:
                flush()
                put(inferred, o)
                continue
            if pending and (pending[0].engine is not o.engine or len(pending) >= group):
                flush()
            pending.append(o)
        flush()

    def deriving() -> None:
        variant = uid_variant(settings)
        while (o := get(inferred)) is not _END:
            if isinstance(o, BaseException):
                put(done, o)
                return
            if o.error is None:
                try:
                    o.out = derive_instance(
                        o.ds,
                        o.result,
                        o.engine.card,
                        settings,
                        backend=getattr(o.engine, "backend_name", None),
                        variant=variant,
                        encoder=codecs.encode,
                    )
                    buf = io.BytesIO()
                    o.out.save_as(buf, enforce_file_format=True)
                    o.data = buf.getvalue()
                except Exception as e:  # noqa: BLE001 - recorded per instance
                    o.error = e
            o.units = []
            put(done, o)

    threads = [
        threading.Thread(target=stage(reading, decoded), name="sr-read", daemon=True),
        threading.Thread(target=stage(inferring, inferred), name="sr-infer", daemon=True),
        threading.Thread(target=stage(deriving, done), name="sr-derive", daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        while True:
            try:
                o = done.get(timeout=_POLL)
            except queue.Empty:
                if on_wait is not None:
                    on_wait()
                continue
            if o is _END:
                return
            if isinstance(o, BaseException):
                raise o
            yield o
    finally:
        stop.set()
        for t in threads:
            t.join()
        if own_codecs:
            codecs.close()


def _units(
    ds: Dataset, read: Callable[[Dataset], np.ndarray]
) -> tuple[list[tuple[np.ndarray, PixelMeta]], bool]:
    """What the engine runs for ``ds`` (as :func:`~dicom_node.derive.process.enhance_pixels`):
    all frames at once, or frame by frame (True) when the rescale varies between frames;
    ``read`` gives the stored pixels (:func:`~dicom_node.derive.pixels.read_pixels`)."""
    pixels = read(ds)
    if pixels.ndim == 3 and rescale_varies(ds):
        return [(pixels[i], PixelMeta.from_dataset(ds, i)) for i in range(pixels.shape[0])], True
    return [(pixels, PixelMeta.from_dataset(ds))], False


def _run(engine: EngineLike, units: list[tuple[np.ndarray, PixelMeta]], dc: bool) -> list[Any]:
    many = getattr(engine, "enhance_many", None)
    if many is not None:
        return list(many(units, consistency=dc))
    return [engine.enhance(p, m, consistency=dc) for p, m in units]


def _set_result(o: Outcome, results: list[Any]) -> None:
    if not o.per_frame:
        o.result = results[0]
    else:
        o.result = combine_frames(results, np.stack([np.asarray(r.pixels) for r in results]))


def _infer(group: list[Outcome], consistency: bool) -> None:
    """Run a group of instances (one engine) in one ``enhance_many`` call; if that fails,
    one by one, so that the failure stays with its instance."""
    if not group:
        return
    engine = group[0].engine
    units = [u for o in group for u in o.units]
    try:
        results = _run(engine, units, consistency)
    except Exception:  # noqa: BLE001 - find the instance(s) to blame below
        results = None
    if results is not None:
        k = 0
        for o in group:
            _set_result(o, results[k : k + len(o.units)])
            k += len(o.units)
        return
    for o in group:
        try:
            _set_result(o, _run(engine, o.units, consistency))
        except Exception as e:  # noqa: BLE001 - recorded per instance
            o.error = e
