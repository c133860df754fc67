"""The collector's pure core: stored values, detection rules, roles. No I/O lives here."""
