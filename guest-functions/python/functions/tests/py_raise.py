"""py-raise: the handler raises; the runtime must print the traceback to stderr and exit 1."""


def handler(event, context):
    raise ValueError("py-raise: this handler always fails")
