"""The collector's HTTP side: the JSON API and the pages, on FastAPI."""
