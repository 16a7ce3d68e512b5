"""What every layer of the toolkit may import: atomic, provenance-stamped artifacts (`core.artifacts`)
and bootstrap intervals with one result shape (`core.stats`). It imports nothing of the toolkit."""
