"""The one exception type the CLI turns into a one-line message and a non-zero exit, and how
to tell a failed allocation from other failures."""


class HsimapError(Exception):
    """An error the user can act on: bad input, a mismatch, an existing output.

    The message says what is wrong and what to do, on one line.
    """

    exit_code = 1


class Interrupted(HsimapError):
    """A run stopped by Ctrl-C that says what it kept: exit code 128 + 2."""

    exit_code = 130


class Stopped(HsimapError):
    """A run stopped by a signal (SIGTERM): what it finished is kept, exit code 128 + 15."""

    exit_code = 143


# The ways a failed allocation is worded below Python: GDAL and libtiff, torch's CPU allocator,
# and a thread whose stack could not be mapped.
_MEMORY_WORDS = ("out of memory", "cannot allocate", "can't allocate", "memory not allocated",
                 "failed to allocate", "can't start new thread",
                 "failed to map segment",  # a library loaded late, its pages unmappable
                 "bad_alloc")  # C++'s std::bad_alloc (torch's oneDNN, GDAL's C++ parts)


def says_out_of_memory(text: str) -> bool:
    """Whether a library's message reports an allocation that failed (not a damaged file,
    not a full disk)."""
    t = text.lower()
    return any(w in t for w in _MEMORY_WORDS)


def storage_problem(exc: BaseException) -> str | None:
    """What a failed write says about the storage, in the user's words: a full disk (or
    quota), a read-only file system; None for other failures. From the error number where
    Python has one, else from the library's text (SQLite in the GeoPackage writers,
    safetensors, GDAL)."""
    import errno

    path = getattr(exc, "filename", None)
    where = f"{path}: " if path else ""
    code = getattr(exc, "errno", None)
    text = str(exc).lower()
    if code in (errno.ENOSPC, errno.EDQUOT) or any(
            w in text for w in ("no space left", "disk is full", "disk full", "quota exceeded")):
        return f"{where}no space left on the device (is the disk full?)"
    if code == errno.EROFS or "read-only file system" in text:
        return f"{where}the file system is read-only; write the outputs elsewhere (-o)"
    return None


def is_out_of_memory(exc: BaseException) -> bool:
    """A MemoryError, or a library error (torch's RuntimeError, GDAL's) that is one."""
    return isinstance(exc, MemoryError) or says_out_of_memory(str(exc))
