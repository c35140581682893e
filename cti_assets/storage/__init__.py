"""Where stored tables live and how they are read and written, a slice at a time."""
