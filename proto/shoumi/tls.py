"""Facts of the TLS set-up that agent and collector must agree on."""

from __future__ import annotations

__all__ = ["TLS_NAME", "AGENT_URI_PREFIX", "normalize_fingerprint"]

# The name agents verify the collector's certificates against (gRPC's ssl_target_name_override):
# trust comes from the pinned private CA, so deployments need not rename certificates per address.
TLS_NAME = "collector.shoumi.internal"
# Client certificates name their agent in a URI subject alternative name.
AGENT_URI_PREFIX = "urn:shoumi:agent:"


def normalize_fingerprint(text: str) -> str:
    """Accepts a SHA-256 fingerprint as hex with or without colons, any case; returns lowercase hex."""
    value = text.strip().lower().replace(":", "")
    if value.startswith("sha256:"):
        value = value[len("sha256:"):]
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"not a SHA-256 fingerprint: {text!r}")
    return value
