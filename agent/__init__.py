"""Shoumi's workstation agent: watches sensitive folders, signs what it sees, streams it."""
