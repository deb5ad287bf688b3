"""The text of every upload (size, UTF-8), with one set of messages."""




class UploadError(ValueError):
    """An uploaded file that cannot be read as text; the message names the file and why."""


# What to do about a file that is not UTF-8, by kind of upload.
CSV_UTF8_FIX = "save it as UTF-8 (in Excel: Save As, \"CSV UTF-8\")."


def read_upload(name: str, data: bytes, max_bytes: int, fix: str = CSV_UTF8_FIX) -> str:
    """The text of an uploaded file (UTF-8; a byte-order mark is dropped), or ``UploadError``
    naming the file: over ``max_bytes``, or not UTF-8 text (another encoding, a binary file).
    Every upload (the locations CSV, batch files) is read here, so all say the same."""
    if len(data) > max_bytes:
        raise UploadError(f"{name} is {len(data):,} bytes; the limit is {max_bytes:,}.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UploadError(f"{name} is not UTF-8 text: {fix}") from None
    if "\x00" in text:  # valid UTF-8, yet no text file holds NUL (a binary file, UTF-16)
        raise UploadError(f"{name} is not UTF-8 text: {fix}")
    return text
