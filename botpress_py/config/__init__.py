"""Server config (botpress.config.json) and module config resolution."""
