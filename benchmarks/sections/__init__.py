"""One module per benchmark section; each registers itself with `benchmarks.registry.register_section`, and
`benchmarks.registry.SECTION_MODULES` gives their order."""
