"""Agreements on record: the registry, signed PDFs validated with pyHanko, in-product acknowledgements sealed with RFC 3161."""
