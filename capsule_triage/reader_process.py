"""Decode in a child process: :func:`~capsule_triage.reader.read_frames` batches handed over
through a ring of shared-memory slots.

Why a process and not only a thread (:func:`~capsule_triage.background.prefetch`): containment.
A damaged file that crashes FFmpeg ends the child, not the run (reported as an
:class:`~capsule_triage.errors.InputError`), so in a batch one bad study still cannot stop the
others. Speed is the same as a thread on 2 cores (5,000-frame study, alternating, three runs each:
335-361 frames/s in a thread vs 327-355 in a process; model on one thread 240-246 vs 240-254), so
the GIL that the two threads share costs nothing measurable. Several processes also decode one
video in parallel (``processes`` > 1, :mod:`capsule_triage.segments`), to feed a GPU.

How: the child is ``python -m capsule_triage._decoder_child`` started with :mod:`subprocess` (not
:mod:`multiprocessing`, whose ``spawn`` re-runs the caller's main script: a user's script without an
``if __name__ == "__main__"`` guard would start itself again). It shares two descriptors:

* the ring: ``depth`` slots of ``batch_size`` frames, sized from the probed frame shape, in an
  unlinked file that both map (anonymous memory, else /dev/shm: nothing to clean up, even after ``kill -9``);
* a socket, to the child: the request (path, options), then the numbers of slots the parent has
  freed (back-pressure: the child never runs more than ``depth`` batches ahead); from the child: per
  batch, its slot and its ``frame_index`` and ``pts_seconds`` (pickled); at the end the child's
  :class:`DecodeStats` and the error that ended the stream, if any.

The parent copies a batch's pixels out of its slot (~5 MB per 32 frames at 224 px, ~1 ms) and frees
the slot at once, so a yielded :class:`FrameBatch` owns its memory. A batch that does not fit the slot
shape (a frame folder with images of several sizes) travels pickled instead. If the child dies, its
socket closes and the parent raises; if the parent stops reading, closing the socket ends the child.
"""

from __future__ import annotations

import mmap
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from .errors import InputError, TriageError
from .frames import DecodeStats, FrameBatch, SourceInfo
from .memory import peak_rss_mb
from .interrupts import starting_children
from .completeness import check_complete
from .reader import ReadOptions, _fit, probe, read_frames, require_frames
from .segments import plan_segments

CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT})  # the decoder's own crash: the input's doing

MAX_RING_BYTES = 1 << 30  # 4 slots of 32 frames at 448 x 796 px (a 16:9 source for a field-of-view model) take 137 MB
MEMFD_MAX_BYTES = 64 << 20  # a ring up to this size is anonymous memory (as much as Docker's default /dev/shm holds)


def frame_shape(info: SourceInfo, options: ReadOptions) -> tuple[int, int]:
    """(height, width) of the frames :func:`read_frames` delivers for this source and these options
    ((0, 0) when the probe could not tell, e.g. a folder whose first image does not decode)."""
    if not info.width or not info.height:
        return 0, 0
    w, h = _fit(info.display_width or info.width, info.height, options.short_side)
    if options.square_crop:
        return min(h, w), min(h, w)
    return h, w


def read_frames_in_process(path: str | Path, options: ReadOptions = ReadOptions(), stats: DecodeStats | None = None,
                           *, depth: int = 4, processes: int = 1) -> Iterator[FrameBatch]:
    """:func:`~capsule_triage.reader.read_frames` run in a child process, at most ``depth`` batches
    ahead of the consumer: the same batches and the same errors (raised where the child met them);
    ``stats`` is filled when the stream ends. Closing the generator early ends the child.

    ``processes`` > 1: a video that :func:`~capsule_triage.segments.plan_segments` can split is
    decoded by that many children, one keyframe-aligned part each, and batches are yielded as the
    children deliver them, **not in time order** (every batch carries its ``frame_index`` and
    ``pts_seconds``; sort by them); the frames, indices, timestamps and counts are those of one pass.

    Raises:
        InputError: as :func:`read_frames`; also when a decoder process dies (e.g. killed by a
            signal inside FFmpeg).
    """
    path = Path(path)
    stats = stats if stats is not None else DecodeStats()
    info = probe(path, options)  # fail fast in the parent, and size the slots
    shape = frame_shape(info, options)
    depth = max(1, depth)
    plan = plan_segments(path, processes) if processes > 1 and info.kind == "video" else None
    arrivals: queue.Queue = queue.Queue()  # (decoder number, message), from one receiving thread per decoder
    with ExitStack() as stack:
        decoders = []
        for number, segment in enumerate(plan.segments if plan else [None]):
            ring = stack.enter_context(_Ring(depth, options.batch_size, shape, path))
            child = stack.enter_context(_Child(ring.fd))
            child.send((str(path), options, ring.frame_shape, depth, segment))
            for slot in range(depth):
                child.send(slot)
            decoders.append((ring, child))
            threading.Thread(target=_forward, args=(number, child, path, arrivals), name=f"capsule-triage-decoder-{number}",
                             daemon=True).start()
        running, errors = len(decoders), {}
        while running:
            number, message = arrivals.get()
            ring, child = decoders[number]
            if message[0] == "slot":
                _, slot, n, frame_index, pts_seconds = message
                data = ring.slots[slot, :n].copy()
                child.send(slot)
                yield FrameBatch(data, frame_index, pts_seconds)
            elif message[0] == "batch":
                yield message[1]
            elif message[0] == "died":
                raise message[1]
            else:  # ("end", stats, error or None)
                _, child_stats, error = message
                stats.frames_decoded += child_stats.frames_decoded
                stats.frames_skipped += child_stats.frames_skipped
                stats.frames_hidden_by_edit_list += child_stats.frames_hidden_by_edit_list
                stats.ticks_without_frame += child_stats.ticks_without_frame
                stats.video_bytes += child_stats.video_bytes
                stats.turned_degrees += [turn for turn in child_stats.turned_degrees if turn not in stats.turned_degrees]
                stats.mirrored += [mirror for mirror in child_stats.mirrored if mirror not in stats.mirrored]
                stats.jpeg_images += child_stats.jpeg_images
                stats.jpeg_bytes += child_stats.jpeg_bytes
                stats.jpeg_pixels += child_stats.jpeg_pixels
                stats.multi_page += child_stats.multi_page  # a frame folder is one part
                stats.smallest_image = child_stats.smallest_image or stats.smallest_image
                for size, count in child_stats.image_sizes.items():  # a video's parts (--decoders) add up
                    stats.image_sizes[size] = stats.image_sizes.get(size, 0) + count
                stats.colour_notes += [note for note in child_stats.colour_notes if note not in stats.colour_notes]
                stats.colour_profiles += child_stats.colour_profiles
                stats.sample_bits = max(stats.sample_bits, child_stats.sample_bits)
                stats.decoder_peak_rss_mb += child_stats.decoder_peak_rss_mb  # all decoder processes together
                errors[number] = child_stats.errors
                if error is not None:
                    stats.errors.extend(child_stats.errors[: max(0, 10 - len(stats.errors))])
                    raise error
                running -= 1
        for number in sorted(errors):  # in time order, whichever part finished first
            stats.errors.extend(errors[number][: max(0, 10 - len(stats.errors))])
    if plan is not None:  # the whole-video checks read_frames makes at the end of its single pass
        check_complete(path, info, stats, packets_read=plan.packets_read, packets_end=plan.packets_end,
                        frames_out=stats.frames_decoded + stats.frames_skipped)
        require_frames(path, stats)


def _forward(number: int, child: "_Child", path: Path, arrivals: queue.Queue) -> None:
    """Receiving thread: pass one decoder's messages on until its last (or its death)."""
    while True:
        try:
            message = child.receive(path)
        except TriageError as exc:  # died: the input's doing (InputError) or not (TriageError)
            arrivals.put((number, ("died", exc)))
            return
        arrivals.put((number, message))
        if message[0] == "end":
            return


class _Ring:
    """``depth`` x ``batch_size`` frames of shared memory in an unlinked file (fd passed to the child).

    The file's pages are allocated up front (``posix_fallocate``), in anonymous memory, else /dev/shm, else
    the temp folder: a tmpfs that is too small (Docker's default /dev/shm is 64 MB) would otherwise make the
    child's first write into a slot a SIGBUS. Where neither has room, or the ring would exceed
    :data:`MAX_RING_BYTES` (a header that claims 60000 px frames), the ring is empty and every batch
    travels pickled through the socket instead (slower, same batches, sized by what really decodes).
    """

    def __init__(self, depth: int, batch_size: int, shape: tuple[int, int], source: Path):
        self.shape = (depth, batch_size, *shape, 3)
        nbytes = int(np.prod(self.shape))
        why: dict[str, str] = {}
        self.fd = _allocated_file(nbytes, why) if nbytes <= MAX_RING_BYTES else None
        if self.fd is None:
            self.shape = (depth, batch_size, 0, 0, 3)
            self.fd = _allocated_file(0, why)
        if self.fd is None:
            places = "; ".join(f"{place}: {reason}" for place, reason in why.items())
            raise TriageError(source, f"cannot make the decoder process's frame buffer anywhere ({places}); "
                                      "not a fault of the input")  # a batch retries it on the next run
        self.map, self.slots = _map_slots(self.fd, self.shape)

    @property
    def frame_shape(self) -> tuple[int, int]:
        return self.shape[2], self.shape[3]

    def __enter__(self) -> "_Ring":
        return self

    def __exit__(self, *exc) -> None:
        del self.slots  # the mmap cannot close while a view on it exists
        if self.map is not None:
            self.map.close()
        os.close(self.fd)


def _allocated_file(nbytes: int, why: dict[str, str]) -> int | None:
    """An unlinked file of ``nbytes`` allocated bytes: in anonymous memory (``memfd_create``, Linux: no /dev/shm
    needed) up to :data:`MEMFD_MAX_BYTES`, else in /dev/shm, else in the temp folder; None if none has room (each
    place's failure in ``why``; QA 49: a full /dev/shm, the first place tried, was a traceback). A bigger ring
    keeps out of anonymous memory as Docker's 64 MB /dev/shm keeps it out of there: it goes to the temp folder,
    whose pages the kernel can write back, rather than pinned memory charged to a container's limit (rev43)."""
    places = ("memory", "/dev/shm", tempfile.gettempdir()) if nbytes <= MEMFD_MAX_BYTES else ("/dev/shm", tempfile.gettempdir())
    for place in places:
        try:
            if place == "memory":
                if not hasattr(os, "memfd_create"):
                    continue
                handle = os.memfd_create("capsule-triage-ring")
            else:
                if not os.path.isdir(place):
                    continue
                handle, name = tempfile.mkstemp(prefix="capsule-triage-ring-", dir=place)
                os.unlink(name)
        except OSError as exc:
            why[place] = exc.strerror or str(exc)
            continue
        try:
            if nbytes and hasattr(os, "posix_fallocate"):
                os.posix_fallocate(handle, 0, nbytes)
            else:  # macOS: no posix_fallocate
                os.ftruncate(handle, nbytes)
            return handle
        except OSError as exc:
            why[place] = exc.strerror or str(exc)
            os.close(handle)
    return None


def _map_slots(fd: int, shape: tuple[int, ...]) -> tuple[mmap.mmap | None, np.ndarray]:
    nbytes = int(np.prod(shape))
    if nbytes == 0:
        return None, np.empty(shape, dtype=np.uint8)
    shared = mmap.mmap(fd, nbytes)
    return shared, np.frombuffer(shared, dtype=np.uint8).reshape(shape)


class _Child:
    """The decoder process and the socket to it (pickled messages both ways).

    A socket rather than pipes: ``MSG_NOSIGNAL`` makes a write to a child that has exited an
    ``EPIPE`` error instead of a SIGPIPE, which would kill a host process that does not ignore it.
    """

    def __init__(self, ring_fd: int):
        ours, theirs = socket.socketpair()
        env = dict(os.environ)  # the child imports this very package, even if the caller found it through sys.path
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH")]))
        try:
            with starting_children():
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "capsule_triage._decoder_child", str(ring_fd), str(theirs.fileno())],
                    pass_fds=(ring_fd, theirs.fileno()), stdin=subprocess.DEVNULL, close_fds=True, env=env,
                )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.socket = ours
        self.incoming = ours.makefile("rb")

    def __enter__(self) -> "_Child":
        return self

    def send(self, obj) -> None:
        """Send a message; a child that has gone is not an error here (it may have sent its last
        batch and exited; if it died, :meth:`receive` says so)."""
        try:
            _send(self.socket, obj)
        except OSError:
            pass

    def receive(self, path: Path):
        try:
            return pickle.load(self.incoming)
        except (EOFError, OSError, ValueError, pickle.UnpicklingError):  # ValueError: closed by __exit__ meanwhile
            code = self.process.wait()
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            if code < 0 and -code not in CRASH_SIGNALS:  # rev42: the out-of-memory killer (SIGKILL), a person, a shutdown
                raise TriageError(path, f"decoder process {how} from outside before the end of the stream (out of memory?); "
                                        "not a fault of the input") from None  # a batch retries it on the next run
            raise InputError(path, f"decoder process died ({how}) before the end of the stream") from None

    def __exit__(self, *exc) -> None:
        try:
            self.socket.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked reading it; the child sees the end and exits
        except OSError:
            pass
        self.incoming.close()
        self.socket.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _send(sock: socket.socket, obj) -> None:
    sock.sendall(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), getattr(socket, "MSG_NOSIGNAL", 0))


def _serve(ring_fd: int, socket_fd: int) -> None:
    """The child: read the request, then decode into the slots the parent frees."""
    parent = socket.socket(fileno=socket_fd)
    from_parent = parent.makefile("rb")

    def send(obj) -> None:
        try:
            _send(parent, obj)
        except OSError as exc:  # EPIPE, ECONNRESET: the parent stopped reading
            raise _ParentGone from exc

    def free_slot() -> int:
        try:
            return pickle.load(from_parent)  # blocks until the parent frees one
        except (EOFError, OSError) as exc:
            raise _ParentGone from exc

    try:
        path, options, shape, depth, segment = pickle.load(from_parent)
    except (EOFError, OSError):
        return
    _, slots = _map_slots(ring_fd, (depth, options.batch_size, *shape, 3))
    stats = DecodeStats()
    error = None
    try:
        for batch in read_frames(path, options, stats, segment=segment):
            if batch.data.shape[1:3] != tuple(shape) or len(batch) > options.batch_size:
                send(("batch", batch))
                continue
            slot = free_slot()
            slots[slot, : len(batch)] = batch.data
            send(("slot", slot, len(batch), batch.frame_index, batch.pts_seconds))
    except _ParentGone:
        return
    except Exception as exc:  # noqa: BLE001 - re-raised in the parent where the stream is consumed
        error = exc
        try:
            pickle.dumps(error)
        except Exception:  # noqa: BLE001 - an exception type that cannot cross the process boundary
            error = InputError(path, f"decoder failed ({type(exc).__name__}: {exc})")
    stats.decoder_peak_rss_mb = peak_rss_mb()
    try:
        send(("end", stats, error))
    except _ParentGone:
        pass


class _ParentGone(Exception):
    """The parent closed its end of the socket: stop quietly."""
