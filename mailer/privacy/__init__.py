"""Privacy operations on stored people: export, erasure (keeping a hashed suppression), the
retention purge and the consent trail shown as proof."""
