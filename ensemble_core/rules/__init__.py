"""Rules from YAML: the schema (what may be written) and the engine (what fires when)."""
