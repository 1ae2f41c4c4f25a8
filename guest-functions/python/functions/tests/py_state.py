"""py-state: module-level state appended per call. Every call starts from the snapshot, so the
answer must always be 1."""

CALLS = []


def handler(event, context):
    CALLS.append(event['event-id'])
    return str(len(CALLS))
