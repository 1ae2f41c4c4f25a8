"""snapcall in-guest Python runtime (Kubeless-style handlers).

    python3 -S -B /runtime/snapcall_runtime.py --module M --handler H
        [--function-name NAME] [--timeout-ms MS] [--memory-mib MIB] [--response body|cgi]

snapcall snapshots the guest at its first read of fd 0, and every call is a fresh copy of that
snapshot. So everything that can be done before the request arrives is done first: imports
(including the user's module), warming json/datetime, gc.freeze(). Only then is stdin read to
its end; after it everything is per-call: fresh randomness, the event, the handler call, the answer.

The handler is called as handler(event, context), with the event
    {"data": <JSON value | str | bytes>, "event-id": <uuid4 hex>, "event-time": <UTC ISO 8601>,
     "event-type": "application/json" | "text/plain" | "application/octet-stream",
     "event-namespace": "snapcall", "extensions": {"request": <the request head>}}
where the request head is a read-only mapping {"method": "GET", "path": "/after/the/name",
"query": "a=1", "headers": {"content-type": "...", ...}} (header names in lower case, repeats
joined with ", "), read from /run/snapcall/request the first time the handler looks at it (a
handler that never does pays nothing for it). The context is {"function-name", "timeout"
(seconds, str), "runtime": "python3.11", "memory-limit" (e.g. "256Mi")}.

The return value is the response: a body (str as UTF-8, bytes as is, anything else as JSON),
or a tuple (body, status) or (body, status, headers) with headers a dict or a list of pairs.
With --response cgi (the bundle's snapcall.response: cgi) the runtime writes a CGI head
(Status:, headers, a blank line) before the body, so status and headers reach the client;
under --response body only the body can, and a status or headers returned are reported on
stderr. stdout is the response channel, so sys.stdout is pointed at stderr while user code
runs: a stray print() in a handler goes to the log, not the response. An exception prints its
traceback to stderr and exits 1.
"""

import os
import sys

# Anything user code prints goes to stderr; the response is written to fd 1 directly.
sys.stdout = sys.stderr
# Nothing is ever loaded from lib-dynload or a stdlib zip: keep them off the import path so
# imports do not probe them.
sys.path = [p for p in sys.path if not p.endswith(("lib-dynload", ".zip"))]

import datetime  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import mmap  # noqa: E402
import random  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Mapping  # noqa: E402
import linecache  # noqa: E402,F401  (used by traceback; import it before the snapshot)


def _fail(msg):
    sys.stderr.write(msg)
    sys.stderr.flush()
    os._exit(1)


def _parse_args(argv):
    opts = {"module": None, "handler": None, "function-name": "", "timeout-ms": "10000",
            "memory-mib": "256", "response": "body"}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            i += 1
        elif a.startswith("--") and i + 1 < len(argv):
            k, v = a[2:], argv[i + 1]
            i += 2
        else:
            _fail("snapcall_runtime: bad argument %r\n" % a)
        if k not in opts:
            _fail("snapcall_runtime: unknown option --%s\n" % k)
        opts[k] = v
    if opts["response"] not in ("body", "cgi"):
        _fail("snapcall_runtime: --response must be body or cgi, not %r\n" % opts["response"])
    if not opts["module"] or not opts["handler"]:
        _fail("usage: snapcall_runtime.py --module M --handler H [--function-name N] "
              "[--timeout-ms MS] [--memory-mib MIB]\n")
    return opts


def _seconds(ms):
    try:
        s = int(ms) / 1000
    except ValueError:
        return ms
    return str(int(s)) if s == int(s) else str(s)


# Allocated before the snapshot, so reading the request needs no brk (each syscall is a VM
# exit, ~27 us on kvm-pvm).
_READ_BUF = bytearray(65536)


def _is_regular_file(fd):
    # S_ISREG without importing stat.
    return (os.fstat(fd).st_mode & 0o170000) == 0o100000


def _read_all(fd, is_file):
    """Reads fd to its end. snapcall's fd 0 is a regular file holding the whole request, where
    a short read is the end: that saves the final read() (a VM exit). A pipe (under km, or
    run by hand) is read until read() returns 0."""
    chunks = []
    view = memoryview(_READ_BUF)
    while True:
        try:
            n = os.readv(fd, [view])
        except InterruptedError:
            continue
        if not n:
            return b"".join(chunks)
        chunks.append(bytes(view[:n]))
        if is_file and n < len(view):
            return b"".join(chunks)


def _map_entropy():
    """snapcall's entropy device, mapped before the snapshot: the monitor refills the page at
    every restore, so each call reads fresh randomness from memory instead of calling
    getrandom (a VM exit). None when not running under snapcall (km, by hand)."""
    try:
        fd = os.open("/dev/snapcall-entropy", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        view = view[n:]


_REQUEST_FILE = "/run/snapcall/request"


def _parse_request(text):
    """The request file's lines ("method GET", "path /p", "query q", "header name: value")."""
    req = {"method": "", "path": "/", "query": "", "headers": {}}
    for line in text.split("\n"):
        key, _, value = line.partition(" ")
        if key == "header":
            name, _, v = value.partition(": ")
            old = req["headers"].get(name)
            req["headers"][name] = v if old is None else old + ", " + v
        elif key in ("method", "path", "query"):
            req[key] = value
    return req


def _read_request():
    try:
        fd = os.open(_REQUEST_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        # Not under snapcall (km, by hand): what a plain POST would say.
        return _parse_request("method POST\npath /\nquery ")
    try:
        return _parse_request(_read_all(fd, True).decode("utf-8", "surrogateescape"))
    finally:
        os.close(fd)


class _RequestHead(Mapping):
    """event["extensions"]["request"]: the request head, read on first use."""

    __slots__ = ("_head",)

    def __init__(self):
        self._head = None

    def _load(self):
        if self._head is None:
            self._head = _read_request()
        return self._head

    def __getitem__(self, key):
        return self._load()[key]

    def __iter__(self):
        return iter(self._load())

    def __len__(self):
        return len(self._load())

    def __repr__(self):
        if self._head is None:
            return "<request head, read on first use>"
        return repr(self._head)


def _event(body, id_bytes=None):
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        data, etype = body, "application/octet-stream"
    else:
        try:
            data, etype = json.loads(text), "application/json"
        except ValueError:
            data, etype = text, "text/plain"
    rnd = bytearray(id_bytes if id_bytes is not None else os.urandom(16))
    rnd[6] = (rnd[6] & 0x0F) | 0x40  # uuid version 4
    rnd[8] = (rnd[8] & 0x3F) | 0x80  # RFC 4122 variant
    return {
        "data": data,
        "event-id": rnd.hex(),
        "event-time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "event-type": etype,
        "event-namespace": "snapcall",
        "extensions": {"request": _RequestHead()},
    }


def _json_default(value):
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError("%r is not JSON serializable" % (value,))


def _split_response(result):
    """(body, status or None, [(name, value)]) from what the handler returned."""
    if isinstance(result, tuple) and len(result) in (2, 3) and isinstance(result[1], int):
        headers = result[2] if len(result) == 3 else ()
        if isinstance(headers, Mapping):
            headers = headers.items()
        return result[0], result[1], [(str(k), str(v)) for k, v in headers]
    return result, None, []


def _head(status, headers):
    lines = ["Status: %d\r\n" % (200 if status is None else status)]
    for name, value in headers:
        # The monitor refuses a broken head with a 502; say here which header was at fault.
        if "\n" in name or "\r" in name or "\n" in value or "\r" in value:
            raise ValueError("response header %r holds a line break" % name)
        lines.append("%s: %s\r\n" % (name, value))
    lines.append("\r\n")
    return "".join(lines).encode("utf-8")


def _encode(result):
    if isinstance(result, str):
        return result.encode("utf-8", "surrogateescape")
    if isinstance(result, (bytes, bytearray, memoryview)):
        return bytes(result)
    return json.dumps(result, default=_json_default).encode("utf-8")


def main():
    opts = _parse_args(sys.argv[1:])

    # ---- start-up (captured by the snapshot) ----
    try:
        module = __import__(opts["module"])
        for part in opts["module"].split(".")[1:]:
            module = getattr(module, part)
        handler = getattr(module, opts["handler"])
    except BaseException:
        _fail("snapcall_runtime: cannot load %s.%s\n%s"
              % (opts["module"], opts["handler"], traceback.format_exc()))
    context = {
        "function-name": opts["function-name"],
        "timeout": _seconds(opts["timeout-ms"]),
        "runtime": "python3.11",
        "memory-limit": opts["memory-mib"] + "Mi",
    }
    # Warm the paths every call takes, so their lazy work is in the snapshot too.
    _encode(_event(b'{"warm": [1, 2.5, "x", null, true]}'))
    _event(b"warm")
    _parse_request("method GET\npath /warm\nquery a=1\nheader x-warm: 1\nheader x-warm: 2\n")
    cgi = opts["response"] == "cgi"
    _head(201, [("X-Warm", "1")])
    # Optional warm-up through the handler itself: snapcall passes the bundle's
    # snapcall.warmup_request annotation (hex) only while taking the snapshot. Whatever the
    # handler caches or mutates on this call is in every restored instance.
    warmup = os.environ.pop("SNAPCALL_WARMUP_HEX", None)
    if warmup is not None:
        try:
            _encode(_split_response(handler(_event(bytes.fromhex(warmup)), context))[0])
        except BaseException:
            _fail("snapcall_runtime: the warm-up request failed\n%s" % traceback.format_exc())
    stdin_is_file = _is_regular_file(0)
    entropy_page = _map_entropy()
    gc.collect()
    gc.freeze()
    sys.stderr.flush()

    # ---- the request: the first read of fd 0 is where snapcall takes the snapshot ----
    body = _read_all(0, stdin_is_file)

    # Every restored instance starts from identical memory: reseed from fresh entropy, from
    # the page snapcall refilled for this call, else one getrandom for the seed and the event
    # id (each syscall is a VM exit, ~27 us here).
    entropy = entropy_page[:48] if entropy_page is not None else os.urandom(48)
    random.seed(entropy[:32])
    try:
        result, status, headers = _split_response(handler(_event(body, entropy[32:]), context))
        out = _encode(result)
        if cgi:
            out = _head(status, headers) + out
        elif status is not None or headers:
            sys.stderr.write("snapcall_runtime: the handler returned a status or headers, but the "
                             "bundle does not declare snapcall.response: cgi; only the body is sent\n")
    except BaseException:
        try:
            sys.stderr.write(traceback.format_exc())
            sys.stderr.flush()
        finally:
            os._exit(1)
    try:
        sys.stderr.flush()
    except Exception:
        pass
    _write_all(1, out)
    os._exit(0)


if __name__ == "__main__":
    main()
