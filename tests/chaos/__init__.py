"""The chaos suite: the whole pipeline (broker, Redis, processors, sync workers, a provider)
under kills, freezes and outages while storefront traffic flows, checked afterwards against a
full recomputation from every event. `runner.run_chaos` runs one scenario; the tests here run
the CI sizes and `benchmarks/chaos.py` the long one."""
