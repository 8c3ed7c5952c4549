"""Entry point of the decoder process (``python -m capsule_triage._decoder_child RING_FD SOCKET_FD``),
started by :func:`capsule_triage.reader_process.read_frames_in_process`; kept apart from that module so
running it as ``__main__`` does not import it twice."""

import signal
import sys

from capsule_triage.reader_process import _serve

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent ends this process
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as does a closed terminal's hangup (rev44)
    _serve(*(int(arg) for arg in sys.argv[1:3]))
