"""py-imports: the stdlib modules issue 4 requires, imported at start-up (before the
snapshot) and exercised per call, with answers the test knows."""

import base64
import binascii
import datetime
import decimal
import hashlib
import json
import math
import random
import re
import struct
import zlib


def handler(event, context):
    return {
        "sha256": hashlib.sha256(b"abc").hexdigest(),
        "md5": hashlib.md5(b"abc").hexdigest(),
        "blake2b": hashlib.blake2b(b"abc", digest_size=8).hexdigest(),
        "decimal": str(decimal.Decimal("1.1") + decimal.Decimal("2.2")),
        "date": datetime.date(2020, 2, 29).isoformat(),
        "b64": base64.b64encode(b"abc").decode(),
        "hex": binascii.hexlify(b"\x01\xff").decode(),
        "crc32": zlib.crc32(b"abc"),
        "re": re.sub(r"(\d+)", r"<\1>", "a1b22"),
        "struct": struct.pack("<I", 258).hex(),
        "sqrt": math.sqrt(16.0),
        "seeded": random.Random(42).randint(1, 1000),
        "json": json.loads('{"x": [1, 2]}'),
    }
