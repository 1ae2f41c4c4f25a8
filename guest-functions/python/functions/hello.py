"""hello: returns a greeting string (content type text/plain)."""


def handler(event, context):
    data = event['data']
    size = len(data) if isinstance(data, (str, bytes)) else len(str(data))
    return "Hello from Python 3.11! You sent %d %s.\n" % (
        size, "bytes" if isinstance(data, bytes) else "characters")
