"""py-time: returns time.time() and random numbers as JSON, so tests can check the guest's
clock after a restore (the vDSO's time page) and that restored instances don't share a
random sequence."""

import random
import time


def handler(event, context):
    return {"time": time.time(), "monotonic": time.monotonic(), "random": random.random()}
