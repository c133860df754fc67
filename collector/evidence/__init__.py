"""Case evidence bundles a third party verifies offline, and witnessed tree heads (issue 12)."""
