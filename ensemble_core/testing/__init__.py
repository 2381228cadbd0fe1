"""Members for testing and measuring the core: a replay of recorded Flux journals and a seeded
fault injector around any member. Tests, `make soak` and the benchmarks use them; a user may too,
to try a rule set against failures before a long run."""
