"""The agent's pure core: domain events, fingerprints and batching. No I/O lives here."""
