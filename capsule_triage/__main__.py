"""``python -m capsule_triage``: the ``triage`` command, where its script is not on PATH (QA 107 #9)."""

from .cli import main

if __name__ == "__main__":  # rev97 #3: an import (pydoc, a tool listing modules) must not run the command
    main()
