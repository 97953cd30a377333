"""Telling at a glance that a file given as weights is no checkpoint at all.

An empty file, a text file, an HTML page (a download that needed a login saves one) or a zip
archive that is not ``torch.save``'s layout is named as such in one line, before any reader
tries it; :mod:`fpn_plugin.checkpoint.safe_load` raises :class:`NotACheckpointError` with it.
"""

__all__ = ["NotACheckpointError"]


class NotACheckpointError(ValueError):
    """The weights file is no checkpoint at all (empty, text, an HTML page, another archive)."""


def why_not_a_checkpoint(path: str) -> str:
    """Why ``path`` is clearly no weights file ("" when it may be one)."""
    import zipfile

    from detectron2.utils.file_io import PathManager

    with PathManager.open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "it is empty (0 bytes)"
    if zipfile.is_zipfile(PathManager.get_local_path(path)):
        with zipfile.ZipFile(PathManager.get_local_path(path)) as z:
            names = z.namelist()
        if not any(n.endswith("data.pkl") for n in names):  # torch.save's zip layout
            return f"it is a zip archive of {names[:3]}{' ...' if len(names) > 3 else ''}, not a torch checkpoint"
        return ""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return ""  # binary: a pickle (protocol >= 2, legacy torch files too) or damaged
    # Protocol-0 pickles are text too: they start with one of its opcodes (MARK, GLOBAL, ...).
    if text[:1] not in "(c}]dlISVFNLpgt)" and all(c.isprintable() or c.isspace() for c in text):
        start = " ".join(text.split())[:60]
        kind = "an HTML page" if "<html" in text.lower() or "<!doctype" in text.lower() else "a text file"
        hint = (" (a download link that needed a login or a confirmation page saves one)"
                if kind == "an HTML page" else "")
        return f"it is {kind}{hint}, starting {start!r}"
    return ""
