"""The domain: the hazard aggregate, its commands, time limits and errors."""
