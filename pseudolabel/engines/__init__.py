"""Where the work runs beyond this process: Ray Data scoring and Ray Train FixMatch (:mod:`.ray`)."""
