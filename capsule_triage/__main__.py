"""``python -m capsule_triage``: the ``triage`` command, where its script is not on PATH (QA 107 #9)."""

from .cli import main

main()
