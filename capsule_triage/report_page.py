"""The shell of every review page: header, footer, the ``<head>`` with its Content-Security-Policy, the
version mark a batch reads to know whether a page is current, and writing a page through a temp file
renamed into place.

The pages are opened from disk (``file://``) or served as static files by a hospital's web server; they
hold names taken from the input (files, folders, classes, model cards). Every such name is escaped where it
is written, and each page also carries a policy that lets only its own code run: the one inline
script and stylesheet it was written with (by their SHA-256), images of its own origin (its thumbnails; on
``file://`` that is any local file, which an image cannot run), nothing else (no other script, no inline event
handler, no connection, no form, no frame, no ``<base>``). A name that an escaping bug let through would be shown,
not run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import uuid
from datetime import datetime, timezone
from pathlib import Path

from .errors import OutputError
from .report_assets import CSS
from .report_svg import RUO, esc
from .versions import version_line

PAGES_VERSION = "11"  # in every page's head; raise it when the pages change so that a batch rewrites those of skipped studies
PAGES_META = '<meta name="capsule-triage-pages" content="{}">'


def page_header(title: str, *, nav: str) -> str:
    return (f'<header><div class="ruo" role="note"><strong>{RUO}.</strong> Scores help decide what to look at first; '
            f'they do not replace reading the study.</div><h1>{esc(title)}</h1>{f"<nav>{nav}</nav>" if nav else ""}</header>')


def keys_hint(keys: str) -> str:
    """The keys of a page (``keys``: markup) and the checkbox that turns them off (WCAG 2.1.4: single-key
    shortcuts can be turned off); the page's script reads and remembers it."""
    return (f'<span class="keys">Keys: {keys} <label><input type="checkbox" id="shortcuts" checked> '
            'Single-key shortcuts</label></span>')


def page_footer() -> str:
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f'<footer>{esc(version_line())} \u00b7 written {made} \u00b7 {RUO}</footer>'


def pages_current(page: Path) -> bool:
    """Whether ``page`` was written by pages of this :data:`PAGES_VERSION` or a later one (QA 43: after an upgrade the
    skipped studies kept their old pages: no link to the batch's index, scores rounded otherwise than the index beside
    them; rev38: not a later version's, which two installs sharing a folder would rewrite in turn every night)."""
    try:
        with open(page, "rb") as fh:
            found = re.search(rb'<meta name="capsule-triage-pages" content="(\d+)">', fh.read(512))
    except OSError:
        return False
    return found is not None and int(found[1]) >= int(PAGES_VERSION)


def _sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def content_security_policy(code: str) -> str:
    """The policy of a page whose one inline script is ``code`` and whose one stylesheet is :data:`CSS`.

    ``'self'`` for images: the thumbnails beside the page (same origin: served over http, the site; opened from
    ``file://``, in Chromium any local file — images, which run nothing). The JSON data block
    (``<script type="application/json">``) is not run, so needs no entry."""
    return ("default-src 'none'; "
            f"script-src {_sha256_source(code)}; style-src {_sha256_source(CSS)}; img-src 'self'; "
            "base-uri 'none'; form-action 'none'")


def html_page(title: str, header: str, main: list[str], code: str, *, data: object = None,
              skip: tuple[str, str] | None = None) -> str:
    """A whole page: ``header``, then the ``main`` parts in ``<main id="main">``, the footer, then
    ``data`` (JSON, as ``<script type="application/json" id="report-data">``) and the script ``code``.

    ``skip``: (target, text) of a link first in the page, shown when it has focus (e.g. past the
    study page's facts and timeline straight to its events)."""
    link = f'<a class="skip" href="{esc(skip[0])}">{esc(skip[1])}</a>\n' if skip else ""
    body = f'{link}{header}\n<main id="main">\n' + "\n".join(main) + f"\n</main>\n{page_footer()}"
    scripts = (f'<script type="application/json" id="report-data">{script_json(data)}</script>' if data is not None else "")
    scripts += f"<script>{code}</script>"
    csp = esc(content_security_policy(code))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{PAGES_META.format(PAGES_VERSION)}'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>{esc(title)}</title><style>{CSS}</style></head>\n'
            f'<body>\n{body}\n{scripts}\n</body></html>\n')


def write_atomic(path: Path, text: str) -> Path:
    """Write a page through a temp file renamed into place (never half a page); OutputError naming it."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        # Names from the input may hold undecodable bytes (kept as surrogates): shown as U+FFFD.
        tmp.write_bytes(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").encode("utf-8"))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(path, f"cannot write ({exc.strerror or exc})") from None
    return path


def script_json(data: object) -> str:
    """JSON safe to embed in ``<script>``: ``<``, ``>``, ``&`` and line separators as \\u escapes."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    for char in "<>&\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text
