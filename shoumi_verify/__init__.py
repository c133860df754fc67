"""shoumi-verify: checks a Shoumi case evidence bundle offline, with nothing but the bundle.

Depends only on cryptography, protobuf and the shared wire modules (proto/shoumi: batch.py and the
generated events_pb2), never on the collector whose output it checks. ``shoumi_verify.check`` holds
the checks, ``shoumi_verify.archive`` the safe reading of the zip, ``shoumi_verify.formats`` the
signed formats shared with the collector and the witness (``shoumi_verify.witness``).
"""
