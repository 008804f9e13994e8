"""Byzantine behaviours and privacy attacks."""
