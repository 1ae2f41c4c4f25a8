"""A warm, persistent Python HTTP server running a Kubeless-style handler: the latency study's
stand-in for the seed's warm Kubeless pod (issue 6).

    python3 warm_server.py --runtime-dir DIR --function-dir DIR --module M --handler H [--port 0]

It imports the same in-guest runtime (guest-functions/python/snapcall_runtime.py, as copied
into a bundle's rootfs/runtime) and the same handler module a snapcall Python bundle runs, and
per request does exactly what the guest does after its snapshot point: build the event
(_event), call the handler, encode the answer (_encode). The difference from snapcall is only
that the interpreter, its imports and its heap stay alive between calls.

HTTP/1.1 keep-alive, one request at a time, 127.0.0.1 only. Prints
"warm_server: listening on http://127.0.0.1:PORT" on stderr once ready.
"""

import argparse
import http.server
import socket
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runtime-dir", required=True)
    ap.add_argument("--function-dir", required=True)
    ap.add_argument("--module", required=True)
    ap.add_argument("--handler", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--threaded", action="store_true",
                    help="a thread per connection (the load sweep's many connections)")
    args = ap.parse_args()

    sys.path[:0] = [args.function_dir, args.runtime_dir]
    import snapcall_runtime as rt  # noqa: E402  (redirects sys.stdout to stderr, as in the guest)

    module = __import__(args.module)
    handler = getattr(module, args.handler)
    context = {"function-name": args.module, "timeout": "10", "runtime": "python3.11",
               "memory-limit": "256Mi"}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive
        disable_nagle_algorithm = True  # headers and body go out in separate writes

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n > 0 else b""
            try:
                out = rt._encode(handler(rt._event(body), context))
                status = 200
            except Exception as e:  # the study checks for 200
                out, status = repr(e).encode(), 500
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST

        def log_message(self, fmt, *a):
            pass

    base = http.server.ThreadingHTTPServer if args.threaded else http.server.HTTPServer

    class Server(base):
        def server_bind(self):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            super().server_bind()

    srv = Server(("127.0.0.1", args.port), Handler)
    sys.stderr.write("warm_server: listening on http://127.0.0.1:%d\n" % srv.server_address[1])
    sys.stderr.flush()
    srv.serve_forever()


if __name__ == "__main__":
    main()
