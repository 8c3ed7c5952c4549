"""Entry point of the decoder process (``python -m capsule_triage._decoder_child RING_FD SOCKET_FD``),
started by :func:`capsule_triage.reader_process.read_frames_in_process`; kept apart from that module so
running it as ``__main__`` does not import it twice."""

import sys

from capsule_triage.interrupts import ignore_group_signals

if __name__ == "__main__":
    ignore_group_signals()  # before the imports below: Ctrl-C and hangup reach the whole group; the parent ends this process
    from capsule_triage.reader_process import _serve

    _serve(*(int(arg) for arg in sys.argv[1:3]))
