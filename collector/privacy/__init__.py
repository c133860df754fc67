"""Pseudonyms: people are shown by a stable pseudonym; a real name is revealed only with a reason, audited."""
