"""Speed and memory benchmarks, run by `eomt benchmark` (`eomt benchmark --help` lists the sections; not part of the
test run).

`registry` holds the sections, which `sections/<name>.py` register; `context` the models with the same weights and the
options every section reads; `measure` timing, statistics, FLOPs and memory; `inputs` synthetic images and model
outputs; `runner` runs the selected sections and `report` writes the Markdown table and the JSON.
"""
