"""``pipe:<command>`` and remote shard URLs (http(s), sftp, ftps, scp, gs, ais, hf): the command's stdout,
read with bounds (plain Python; webdataset's gopen wrapper hides the descriptor and the session these
bounds need). Remote URLs run the program webdataset's gopen would run for them (curl, gsutil, ais),
with its arguments, found through webdataset's own scheme table, so ``USE_AIS_FOR`` and
``GOPEN_REWRITE`` keep their meaning (:func:`remote_command`).

A command that writes nothing for :data:`PIPE_STALL_SECONDS` is stalled (a hung mount or network
copy): it is stopped and the read fails, so its shard is counted unreadable instead of holding its
loader worker - and so the training step - forever. Streaming commands write continuously once they
have started. After the tar reader is done, :meth:`PipeCommand.finish` reads the rest of the stream
(the tar's padding) for at most :data:`FINISH_SECONDS` and checks the exit status, so a command that
fails after writing its shard is reported (its samples are kept) whatever the tar's layout; one that
keeps running after its output is stopped and not held against its shard.

The command runs in a shell, as webdataset's gopen runs it, in a session of its own so that stopping
it stops what the shell started too. It is the user's own configuration (``data.path``), never a
string read from data. ``WDS_SECURE`` (webdataset's switch) refuses commands.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
from contextlib import suppress

PIPE_STALL_SECONDS = 300.0
FINISH_SECONDS = 10.0  # reading the tail after the tar's end, and waiting for the exit status
# A process in uninterruptible I/O (a hard NFS mount) may outlive SIGKILL: not waited for longer.
KILL_WAIT_SECONDS = 5.0
_SIGPIPE_EXIT = 141  # the shell's status when its reader went away: not the command's failure
_CHUNK = 1 << 20
_BLOCK = 512  # a tar block: the reader's compression sniffing reads one whole


def refused() -> bool:
    """webdataset's ``WDS_SECURE``: a non-zero integer refuses commands."""
    value = os.environ.get("WDS_SECURE", "").strip()
    try:
        return bool(int(value or "0"))
    except ValueError:
        return value.lower() not in ("false", "no", "off")


class PipeCommand:
    """The binary stdout of a shell command, read straight from its descriptor (``read``,
    ``seekable``, ``finish``, ``close``: what the tar reader and :func:`~.format.iter_url_groups` use)."""

    def __init__(self, command: str | list[str], stall_seconds: float | None = None,
                 ok_status: tuple[int, ...] = (0, _SIGPIPE_EXIT), stdin: bytes | None = None,
                 target: str | None = None):
        """``command``: a shell command line (a ``pipe:`` URL's, refused under ``WDS_SECURE``) or an
        argument list run without a shell (:func:`remote_command`); ``ok_status``: exit statuses that
        are not failures; ``stdin``: bytes the command reads (a secret kept out of its arguments),
        else it reads nothing; ``target``: what it reads, for the message when it is not installed."""
        shell = isinstance(command, str)
        if shell and refused():
            raise ValueError("pipe: URLs are refused while WDS_SECURE is set")
        try:
            self._proc = subprocess.Popen(command, shell=shell, stdout=subprocess.PIPE,
                                          stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                                          start_new_session=True)
        except FileNotFoundError:
            raise OSError(f"{command[0]} is not installed (needed to read {target or command[-1]})") from None
        if stdin is not None:  # a few hundred bytes: fits the pipe's buffer, never blocks
            with suppress(BrokenPipeError):
                self._proc.stdin.write(stdin)
            with suppress(BrokenPipeError):
                self._proc.stdin.close()
        self._ok = ok_status
        self._fd = self._proc.stdout.fileno()
        self._poll = select.poll()  # not select.select: descriptors above 1024 must work too
        self._poll.register(self._fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        self._stall = PIPE_STALL_SECONDS if stall_seconds is None else stall_seconds
        self._ended = False

    def seekable(self) -> bool:
        return False

    def _chunk(self, limit: int, wait: float) -> bytes | None:
        """Up to ``limit`` bytes; b"" at the end of the stream, None when nothing came within ``wait`` s."""
        if not self._poll.poll(max(0, int(wait * 1000))):
            return None
        data = os.read(self._fd, limit)
        self._ended = not data
        return data

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all, for -1). Once one tar block (512 bytes, or ``size`` if smaller) has
        arrived, returns what has come instead of waiting for more: the tar reader asks for whole
        10 KiB records and loops until it has what it needs, and the last record of a command that
        has written everything but not ended would otherwise be waited for until the stall bound.
        The exit status is checked by :meth:`finish`, after the tar reader is done."""
        out = bytearray()
        enough = size if 0 <= size < _BLOCK else _BLOCK
        while not self._ended and (size < 0 or len(out) < size):
            waiting = size < 0 or len(out) < enough
            chunk = self._chunk(_CHUNK if size < 0 else min(_CHUNK, size - len(out)),
                                self._stall if waiting else 0.0)
            if chunk is None:
                if not waiting:
                    break
                self._stop()
                raise TimeoutError(f"the command wrote nothing for {self._stall:g} s (stalled); stopped it")
            out += chunk
        return bytes(out)

    def finish(self) -> None:
        """After the tar's end: read what is left (bounded in time) and check the exit status; OSError
        for a command that failed. A command still writing or running after ``FINISH_SECONDS`` is stopped
        without blame: its shard has been read."""
        import time

        deadline = time.monotonic() + FINISH_SECONDS
        while not self._ended:
            left = deadline - time.monotonic()
            if left <= 0 or self._chunk(_CHUNK, left) is None:
                self._stop()
                return
        self._check_exit()

    def exit_problem(self) -> str | None:
        """After a broken read: the command's non-zero exit status if it has ended (why the tar broke,
        more often than not), else None. Waits (bounded) only when its output has ended: the exit
        status follows the end of the output by a moment."""
        status = self._proc.poll()
        if status is None and self._ended:
            with suppress(subprocess.TimeoutExpired):
                status = self._proc.wait(timeout=FINISH_SECONDS)
        return None if status is None or status in self._ok else f"the command exited with status {status}"

    def _check_exit(self) -> None:
        try:
            status = self._proc.wait(timeout=FINISH_SECONDS)
        except subprocess.TimeoutExpired:  # closed its output but runs on: stop it, its output is complete
            self._stop()
            return
        if status not in self._ok:
            raise OSError(f"the command exited with status {status}")

    def _stop(self) -> None:
        # The whole session: the shell and what it started, also children that outlived it (the group
        # id is not reused while the group has members; an empty group raises ProcessLookupError).
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=KILL_WAIT_SECONDS)

    def close(self) -> None:
        self._stop()
        self._proc.stdout.close()


# The exit statuses that are not failures: the reader went away (SIGPIPE in a shell, curl's write
# error 23), as webdataset's gopen ignores them.
CURL_OK_STATUS = TOOL_OK_STATUS = (0, _SIGPIPE_EXIT, 23)


def curl_command(url: str, *extra: str) -> list[str]:
    """webdataset's curl invocation for a remote shard (connect timeout, retries, fail on HTTP errors,
    follow redirects), as an argument list: the URL never reaches a shell."""
    return ["curl", "--connect-timeout", "30", "--retry", "30", "--retry-delay", "2", "-f", "-s", "-L", *extra, url]


def _hf_command(url: str) -> tuple[list[str], bytes | None]:
    """An ``hf://`` file as webdataset reads it (the hub's download URL, through curl), except that the
    access token goes to curl on stdin (``-K -``), not in its arguments, where every user of the
    machine could read it (``ps``)."""
    try:
        from huggingface_hub import HfFileSystem, get_token, hf_hub_url
    except ImportError:
        raise OSError(f"reading {url} needs the huggingface_hub package (pip install huggingface_hub)") from None
    where = HfFileSystem().resolve_path(url)
    http_url = hf_hub_url(repo_id=where.repo_id, filename=where.path_in_repo, repo_type=where.repo_type,
                          revision=where.revision)
    token = get_token()
    if not token:
        return curl_command(http_url), None
    quoted = token.replace("\\", "\\\\").replace('"', '\\"')
    return curl_command(http_url, "-K", "-"), f'header = "Authorization: Bearer {quoted}"\n'.encode()


def remote_command(url: str) -> tuple[list[str], tuple[int, ...], bytes | None] | None:
    """(arguments, exit statuses that are not failures, stdin) of the program webdataset's gopen runs to
    read ``url`` (already through ``GOPEN_REWRITE``), looked up in gopen's scheme table (``USE_AIS_FOR``
    points schemes at ais there); None when gopen would not run a known program (``file:``, a scheme
    with a handler of the user's own, one without a handler): gopen reads those itself."""
    from urllib.parse import urlparse

    from webdataset.gopen import gopen_ais, gopen_curl, gopen_gsutil, gopen_hf, gopen_schemes

    handler = gopen_schemes.get(urlparse(url).scheme)
    if handler is gopen_curl:
        return curl_command(url), CURL_OK_STATUS, None
    if handler is gopen_gsutil:
        return ["gsutil", "cat", url], TOOL_OK_STATUS, None
    if handler is gopen_ais:
        return ["ais", "get", url, "-"], TOOL_OK_STATUS, None
    if handler is gopen_hf:
        command, stdin = _hf_command(url)
        return command, CURL_OK_STATUS, stdin
    return None


__all__ = ["CURL_OK_STATUS", "FINISH_SECONDS", "PIPE_STALL_SECONDS", "PipeCommand", "TOOL_OK_STATUS",
           "curl_command", "refused", "remote_command"]
