"""persona-studio application: CLI and Dear PyGui studio."""
