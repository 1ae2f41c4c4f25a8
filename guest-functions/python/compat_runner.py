"""snapcall compat runner: runs one CPython regression-test module and prints one
machine-readable line per test (docs/compat.md).

The same script runs in a snapcall VM and natively (benches/src/bin/compat). Its request,
on stdin, is JSON:

    {"module": "test_json",            the module under Lib/test
     "exclude": ["test.x.T.test_a"],   test ids not to run (they hung or killed a run)
     "only": ["test.x.T.test_b"],      if given, run just these ids
     "mark": false,                    bracket each test with marker syscalls (see MARK_FD)
     "uid": 1000}                      natively: become this uid/gid first (the VM's identity)

Each line on stdout starts with "@compat " and is a JSON object:

    {"test": ID, "outcome": "pass|fail|skip", "cause": FIRST LINE, "child": bool, "net": bool,
     "n": INDEX}
    {"module_error": FIRST LINE}       the module did not import / its test_main raised
    {"done": N}                        the module ran to its end; N tests reported

"pass" covers success and expected failures; "fail" covers failures, errors and unexpected
successes (a test with any failing subtest fails). "cause" is the first line of the first
error plus where it was raised ("at FILE:LINE in FUNC", the innermost frame outside
unittest). "child" / "net" say whether the test tried to start a child process (fork, exec,
posix_spawn, subprocess: an audit event, or an error raised through subprocess, multiprocessing
or test.support.script_helper) or to use an internet socket (AF_INET/AF_INET6, name lookups:
audit events): the VM refuses both by design, so such losses are counted apart.

What the tests print goes to stderr (sys.stdout is pointed there), so stdout holds only
these lines. Before each test the runner writes "@compat start ID" to stderr, so a run that
ends in a hang or crash names the test it was in.
"""

import json
import os
import sys
import traceback
import unittest

# The marker: os.lseek on this fd, which is never open (it is above any fd limit snapcall or
# Linux gives a process), fails with EBADF and does nothing, but shows in
# `snapcall run --trace-syscalls` as lseek(0x7ffffff0, N, 0) before test N and
# lseek(0x7ffffff0, N, 1) after it.
MARK_FD = 0x7FFFFFF0

CHILD_EVENTS = {
    "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
    "subprocess.Popen", "pty.spawn",
}
NET_EVENTS = {"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
              "socket.gethostname", "socket.getnameinfo"}
AF_INET, AF_INET6 = 2, 10

RECORDS_FD = 1
_current = {"child": False, "net": False}


def emit(obj):
    os.write(RECORDS_FD, ("@compat " + json.dumps(obj) + "\n").encode())


def audit(event, args):
    if event in CHILD_EVENTS:
        _current["child"] = True
    elif event in NET_EVENTS:
        _current["net"] = True
    elif event == "socket.__new__" and len(args) > 1 and args[1] in (AF_INET, AF_INET6):
        _current["net"] = True


def mark(index, phase):
    try:
        os.lseek(MARK_FD, index, phase)
    except OSError:
        pass


def first_line(text):
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""


def where(tb):
    """The innermost traceback frame outside unittest, as 'FILE:LINE in FUNC'."""
    frames = [f for f in traceback.extract_tb(tb) if "/unittest/" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    name = f.filename
    for prefix in ("/usr/lib/python3.11/test/", "/usr/lib/python3.11/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return f"{name}:{f.lineno} in {f.name}"


# Frames that mean "this was starting a child process" when an error passes through them
# (subprocess fails at its pipes before its audit event fires).
CHILD_FRAMES = ("/subprocess.py", "/script_helper.py", "/multiprocessing/", "/concurrent/futures/process.py",
                "/pty.py")


def describe(err):
    exc_type, exc, tb = err
    text = traceback.format_exception_only(exc_type, exc)
    line = first_line("".join(text))
    frames = traceback.extract_tb(tb)
    if any(any(c in f.filename for c in CHILD_FRAMES) for f in frames):
        _current["child"] = True
    at = where(tb)
    return f"{line} (at {at})" if at else line


class RecordingResult(unittest.TestResult):
    """Reports every test as one line, as it ends."""

    def __init__(self, state):
        super().__init__()
        self.state = state
        self.outcome = None
        self.started = False

    def startTest(self, test):
        super().startTest(test)
        self.started = True
        self.outcome = ("pass", "")
        _current["child"] = _current["net"] = False
        self.state["index"] += 1
        os.write(2, f"@compat start {test.id()}\n".encode())
        if self.state["mark"]:
            mark(self.state["index"], 0)

    def _fail(self, cause):
        if self.outcome[0] != "fail":
            self.outcome = ("fail", cause)

    def addError(self, test, err):
        super().addError(test, err)
        if not self.started:
            # An error in setUpClass/setUpModule (or their teardowns): unittest reports it
            # for a pseudo-test (_ErrorHolder) that never started.
            self.outcome = ("fail", describe(err))
            self.report(test.id())
        else:
            self._fail(describe(err))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._fail(describe(err))

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._fail(describe(err))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        if not self.outcome or self.outcome[0] != "fail":
            self.outcome = ("skip", first_line(reason))
        if not self.started:  # setUpClass/setUpModule raised SkipTest: a pseudo-test
            self.report(test.id())

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._fail("unexpected success")

    def stopTest(self, test):
        super().stopTest(test)
        if self.state["mark"]:
            mark(self.state["index"], 1)
        self.report(test.id())
        self.started = False

    def report(self, test_id):
        seen = self.state["seen"]
        n = seen.get(test_id, 0) + 1
        seen[test_id] = n
        if n > 1:  # a module that runs the same class twice (test_main with two variants)
            test_id = f"{test_id}#{n}"
        outcome, cause = self.outcome or ("fail", "no outcome")
        emit({"test": test_id, "outcome": outcome, "cause": cause, "child": _current["child"],
              "net": _current["net"], "n": self.state["index"]})
        self.state["reported"] += 1
        self.outcome = None


def filtered(suite, keep):
    """The suite without the tests `keep` rejects (suites kept, so class fixtures still run)."""
    out = unittest.TestSuite()
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            out.addTest(filtered(t, keep))
        elif keep(t.id()):
            out.addTest(t)
    return out


def main():
    request = json.loads(sys.stdin.buffer.read() or b"{}")
    if request.get("uid") is not None:
        # The native run starts as root (to chroot); the tests run unprivileged, as in the VM.
        os.setgroups([])
        os.setgid(request["uid"])
        os.setuid(request["uid"])
    module_name = request["module"]
    exclude = set(request.get("exclude") or ())
    only = set(request["only"]) if request.get("only") is not None else None
    state = {"index": 0, "seen": {}, "reported": 0, "mark": bool(request.get("mark"))}

    # Tests print to sys.stdout; keep fd 1 for the records.
    sys.stdout = sys.stderr
    sys.addaudithook(audit)

    from test import support
    # As `python -m test` without -u: no optional resources (network, cpu, largefile, ...).
    support.use_resources = []
    support.verbose = 0

    def keep(test_id):
        return test_id not in exclude and (only is None or test_id in only)

    def run_suite(suite):
        result = RecordingResult(state)
        filtered(suite, keep).run(result)
        return result

    support._run_suite = run_suite
    try:
        module = __import__(f"test.{module_name}", fromlist=["*"])
        test_main = getattr(module, "test_main", None)
        if test_main is not None:
            test_main()
        else:
            run_suite(unittest.TestLoader().loadTestsFromModule(module))
    except Exception:  # a module that fails to import, or a test_main that raises
        emit({"module_error": describe(sys.exc_info())})
    emit({"done": state["reported"]})
    sys.stderr.flush()


if __name__ == "__main__":
    main()
    os._exit(0)
