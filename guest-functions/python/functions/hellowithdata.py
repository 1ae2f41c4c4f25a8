"""hellowithdata: the Kubeless "hellowithdata" example, ported to Python 3.

Kubeless' original is
    def handler(event, context):
        print event
        return event['data']
Its print went to the function's log. In snapcall stdout is the response, so the event is
logged to stderr instead (the runtime also redirects sys.stdout to stderr, so a plain print()
would land there too and not corrupt the response).
"""
import sys


def handler(event, context):
    print(event, file=sys.stderr)
    return event['data']
